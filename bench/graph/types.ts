// The graph a generator produces and the CSV pair describes.

export type Kind = 'user' | 'group' | 'object';
export type Level = 1 | 2 | 3;
export type Size = 'small' | 'large';
export const SHAPES = ['org', 'tree', 'deep', 'wide', 'cyclic'] as const;
export type Shape = (typeof SHAPES)[number];

export interface NodeRow {
  id: string;
  kind: Kind;
  owner: string | null;
}

export interface GrantRow {
  tail: string;
  head: string;
  level: Level;
  source: string;
}

/**
 * Collects nodes (owners always before what they own) and grants (one per
 * tail, head, source). Ids follow a convention the benchmarks rely on to find
 * candidates for changes: users `u…`, teams `t…`, projects `p…`, objects `o…`,
 * and the fixed-size probe cluster `xu… xt… xp… xo…` (see README.md).
 */
export class GraphBuilder {
  readonly nodes: NodeRow[] = [];
  readonly grants: GrantRow[] = [];
  private readonly ids = new Set<string>();
  private readonly grantKeys = new Set<string>();

  node(id: string, kind: Kind, owner: string | null = null): string {
    if (this.ids.has(id)) throw new Error(`duplicate node id ${id}`);
    if (owner !== null && !this.ids.has(owner)) throw new Error(`owner ${owner} of ${id} is not defined yet`);
    this.ids.add(id);
    this.nodes.push({ id, kind, owner });
    return id;
  }

  /** Adds a grant unless one already joins tail and head with this source; true when added. */
  grant(tail: string, head: string, level: Level, source = 'default'): boolean {
    const key = `${tail}\u0000${head}\u0000${source}`;
    if (this.grantKeys.has(key)) return false;
    this.grantKeys.add(key);
    this.grants.push({ tail, head, level, source });
    return true;
  }
}
