// One plain and one streamed chat completion with the official OpenAI Node SDK, against
// OPENAI_BASE_URL (the HTTP API under test); prints one JSON line of what it got.
const OpenAI = require("openai");

async function main() {
  const client = new OpenAI({ apiKey: "unused", baseURL: process.env.OPENAI_BASE_URL, maxRetries: 0 });
  const plain = await client.chat.completions.create({
    model: process.env.MODEL,
    messages: [{ role: "user", content: "plain" }],
  });
  const stream = await client.chat.completions.create({
    model: process.env.MODEL,
    messages: [{ role: "user", content: "streamed" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = "";
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) streamed += chunk.choices[0].delta.content || "";
    if (chunk.usage) usage = chunk.usage;
  }
  let status = null;
  try {
    await client.chat.completions.create({ model: process.env.MODEL, messages: [] });
  } catch (error) {
    status = error instanceof OpenAI.BadRequestError ? error.status : `unexpected ${error}`;
  }
  console.log(JSON.stringify({ plain: plain.choices[0].message.content, plainUsage: plain.usage, streamed, usage, status }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
