/**
 * Worker-thread entry of one transformers.js model ({@link TransformersPipeline} starts it with
 * the model's options as `workerData`). Tasks: `load` (loads; its one output is the task) and
 * `run` (a batch). A load that fails answers every item of a `run` with the load error, so each
 * item reports `ERR_MODEL_LOAD` (or `ERR_DEVICE_UNAVAILABLE`) rather than the batch failing whole.
 */
import { workerData } from 'node:worker_threads'
import { TransformersModel, type TransformersPipelineOptions } from './transformers-model.js'
import { serveTasks } from './worker-protocol.js'

const model = new TransformersModel(workerData as TransformersPipelineOptions)

serveTasks({
  load: async () => {
    try {
      await model.load()
      return [model.task]
    } catch (err) {
      return [err]
    }
  },
  run: async (inputs, parameters) => {
    try {
      await model.load()
    } catch (err) {
      return inputs.map(() => err)
    }
    return model.run(inputs, parameters)
  },
})
