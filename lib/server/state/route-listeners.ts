import type { Routed } from './state-backend.js'

/** The in-process side of `StateBackend.subscribe`: listeners per node, called with what a transition routed there. */
export class RouteListeners {
  private readonly byNode = new Map<string, Set<(routed: Routed[]) => void>>()

  /** Adds a node's listener; returns what removes it. */
  subscribe(node: string, listener: (routed: Routed[]) => void): () => void {
    let set = this.byNode.get(node)
    if (!set) this.byNode.set(node, (set = new Set()))
    set.add(listener)
    return () => {
      set.delete(listener)
      if (set.size === 0) this.byNode.delete(node)
    }
  }

  /** Hands each node its routed results (after the transition that routed them committed). */
  route(routed: Map<string, Routed[]>): void {
    for (const [node, list] of routed) {
      if (list.length === 0) continue
      for (const listener of this.byNode.get(node) ?? []) listener(list)
    }
  }
}
