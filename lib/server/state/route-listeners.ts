import type { Routed } from './state-backend.js'

/**
 * The in-process side of `StateBackend.subscribe` and `attach`: listeners per node, called with
 * what a transition routed there, and the nodes where each owner has a stream open — a stream
 * result is also handed to those (the client may have reconnected to another node).
 */
export class RouteListeners {
  private readonly byNode = new Map<string, Set<(routed: Routed[]) => void>>()
  // Nodes with a stream of each owner open (StateBackend.attach).
  private readonly present = new Map<string, Set<string>>()

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

  /** `node` has a stream of `owner` open (true) or no longer (false). */
  attach(node: string, owner: string, open: boolean): void {
    let nodes = this.present.get(owner)
    if (open) {
      if (!nodes) this.present.set(owner, (nodes = new Set()))
      nodes.add(node)
    } else if (nodes) {
      nodes.delete(node)
      if (nodes.size === 0) this.present.delete(owner)
    }
  }

  /** Hands each node its routed results (after the transition that routed them committed), and stream results to the owner's other nodes. */
  route(routed: Map<string, Routed[]>): void {
    // Several nodes in this process (front-ends sharing one backend): stream results also go to the
    // nodes where their owner has a stream open. One node alone has nothing to add.
    const others = this.byNode.size > 1 && this.present.size > 0 ? this.forOthers(routed) : undefined
    for (const [node, list] of routed) {
      if (list.length === 0) continue
      for (const listener of this.byNode.get(node) ?? []) listener(list)
    }
    if (others) for (const [node, list] of others) for (const listener of this.byNode.get(node) ?? []) listener(list)
  }

  private forOthers(routed: Map<string, Routed[]>): Map<string, Routed[]> {
    const out = new Map<string, Routed[]>()
    for (const [node, list] of routed) {
      for (const r of list) {
        if (r.sink !== undefined) continue
        const nodes = this.present.get(r.owner)
        if (!nodes) continue
        for (const n of nodes) {
          if (n === node) continue
          let l = out.get(n)
          if (!l) out.set(n, (l = []))
          l.push({ owner: r.owner, id: r.id })
        }
      }
    }
    return out
  }
}
