package testenv

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// Validate checks value (as encoding/json or structpb.Struct.AsMap decode
// JSON: numbers are float64) against the subset of JSON Schema the tests'
// schemas use: type (object, string, integer, number, boolean, array),
// properties, required, additionalProperties: false, enum, maxLength,
// minimum and maximum. It returns the first violation, or nil.
func Validate(schema map[string]any, value any) error {
	return validate(schema, value, "$")
}

func validate(schema map[string]any, value any, path string) error {
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, value) {
		return fmt.Errorf("%s: %v is not one of %v", path, value, enum)
	}
	switch schema["type"] {
	case nil:
	case "object":
		object, ok := value.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %T is not an object", path, value)
		}
		return validateObject(schema, object, path)
	case "string":
		text, ok := value.(string)
		if !ok {
			return fmt.Errorf("%s: %T is not a string", path, value)
		}
		if limit, ok := number(schema["maxLength"]); ok && float64(len([]rune(text))) > limit {
			return fmt.Errorf("%s: %q is longer than %v", path, text, limit)
		}
	case "integer", "number":
		n, ok := value.(float64)
		if !ok {
			return fmt.Errorf("%s: %T is not a number", path, value)
		}
		if schema["type"] == "integer" && n != math.Trunc(n) {
			return fmt.Errorf("%s: %v is not an integer", path, n)
		}
		if low, ok := number(schema["minimum"]); ok && n < low {
			return fmt.Errorf("%s: %v < minimum %v", path, n, low)
		}
		if high, ok := number(schema["maximum"]); ok && n > high {
			return fmt.Errorf("%s: %v > maximum %v", path, n, high)
		}
	case "boolean":
		if _, ok := value.(bool); !ok {
			return fmt.Errorf("%s: %T is not a boolean", path, value)
		}
	case "array":
		if _, ok := value.([]any); !ok {
			return fmt.Errorf("%s: %T is not an array", path, value)
		}
	default:
		return fmt.Errorf("%s: schema type %v is not supported by testenv.Validate", path, schema["type"])
	}
	return nil
}

func validateObject(schema map[string]any, object map[string]any, path string) error {
	properties, _ := schema["properties"].(map[string]any)
	required, _ := schema["required"].([]any)
	for _, name := range required {
		if _, ok := object[name.(string)]; !ok {
			return fmt.Errorf("%s: required property %q is missing", path, name)
		}
	}
	names := make([]string, 0, len(object))
	for name := range object {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		property, known := properties[name].(map[string]any)
		if !known {
			if schema["additionalProperties"] == false {
				return fmt.Errorf("%s: property %q is not allowed", path, name)
			}
			continue
		}
		if err := validate(property, object[name], path+"."+name); err != nil {
			return err
		}
	}
	return nil
}

func number(value any) (float64, bool) {
	switch n := value.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}
