/** Whether ONNX models can run on a GPU here, and the error that says why not. */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { DeviceUnavailableError } from '../errors.js'

/** The CUDA execution provider library that `onnxruntime-node`'s installer adds on CUDA machines. */
export function cudaProviderPath(): string | undefined {
  try {
    const require = createRequire(import.meta.url)
    const pkg = dirname(require.resolve('onnxruntime-node/package.json'))
    return join(pkg, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so')
  } catch {
    return undefined
  }
}

/** Whether this machine can run ONNX models on a GPU (CUDA provider installed, Linux x64). */
export function gpuAvailable(): boolean {
  const lib = cudaProviderPath()
  return process.platform === 'linux' && process.arch === 'x64' && lib !== undefined && existsSync(lib)
}

/** Why `gpu` compute cannot run here, for the error a client gets. */
export function gpuUnavailableError(id: string): DeviceUnavailableError {
  return new DeviceUnavailableError(
    `Model ${id} cannot run on gpu here: ONNX Runtime's CUDA provider is not installed (${cudaProviderPath() ?? 'onnxruntime-node not found'}). ` +
      'On a machine with CUDA 12, run ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install; or use the cpu URL, or start the server with --gpu-fallback cpu',
  )
}
