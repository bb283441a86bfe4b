// Send calls through @segment/analytics-node to a collector: `node send_node.mjs HOST WRITE_KEY`
// with a JSON list of calls on stdin ({"type": "track", "messageId": ..., "userId": ..., ...}:
// the SDK's own parameter names). Prints {"errors": [...]} once everything is flushed.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey] = process.argv.slice(2)
let input = ''
for await (const chunk of process.stdin) input += chunk
const calls = JSON.parse(input)

const analytics = new Analytics({ writeKey, host })
const errors = []
analytics.on('error', (error) => errors.push(String(error?.reason ?? error?.code ?? error)))
for (const { type, ...params } of calls) {
  analytics[type](params)
}
await analytics.closeAndFlush({ timeout: 120000 })
console.log(JSON.stringify({ errors }))
