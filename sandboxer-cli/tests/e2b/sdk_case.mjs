// The official E2B JavaScript SDK against sandboxer's E2B front door: one
// lifecycle, printed as JSON for sandboxer-cli's tests/it/e2b.rs to check.
// Run from the folder whose node_modules holds `e2b`, with E2B_API_URL,
// E2B_API_KEY and E2B_DOMAIN set (OTHER_API_KEY: another actor's token).
import { Sandbox } from 'e2b'

const name = (f) => f().then(() => null, (e) => ({ type: e.constructor.name, message: e.message }))

const s = await Sandbox.create('canary', { metadata: { who: 'js', run: 'a b' }, timeoutMs: 120_000 })
const info = await s.getInfo()
const listed = (await Sandbox.list({ query: { metadata: { run: 'a b' } } }).nextItems()).map((x) => x.sandboxId)
await s.setTimeout(600_000)
const after = await Sandbox.getInfo(s.sandboxId)
const metrics = await s.getMetrics()
const connected = await Sandbox.connect(s.sandboxId)
const paused = await s.pause()
const pausedState = (await Sandbox.getInfo(s.sandboxId)).state
const resumed = await Sandbox.connect(s.sandboxId)
const resumedState = (await Sandbox.getInfo(s.sandboxId)).state
const snap = await s.createSnapshot()
const restored = await Sandbox.create(snap.snapshotId)
await restored.kill()
const deleted = await Sandbox.deleteSnapshot(snap.snapshotId)
const other = await name(() => Sandbox.getInfo(s.sandboxId, { apiKey: process.env.OTHER_API_KEY }))
const killed = await s.kill()
const gone = await name(() => Sandbox.getInfo(s.sandboxId))
console.log(JSON.stringify({
  id: s.sandboxId,
  template: info.templateId,
  state: info.state,
  metadata: info.metadata,
  seconds: (info.endAt - info.startedAt) / 1000,
  moved: (after.endAt - info.endAt) / 1000,
  listed,
  metrics: metrics.length,
  connected: connected.sandboxId,
  paused,
  pausedState,
  resumed: resumed.sandboxId,
  resumedState,
  snapshot: snap.snapshotId,
  restored: restored.sandboxId,
  deleted,
  other,
  killed,
  gone,
}))
