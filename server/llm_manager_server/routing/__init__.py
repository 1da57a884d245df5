"""Which models may answer a request, in what order, and how failures move on."""
