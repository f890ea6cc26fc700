import t from 'tap'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'
import { stateContract } from './helpers/state-contract.js'

// The state layer's contract on the in-process backend (the embedded default).
stateContract(t, async (limits) => new MemoryStateBackend(limits))
