// Types shared by the engine, the application API and the CLI, defined once.

/** The kinds of node: users hold grants, groups pass them on, objects only receive them. */
export type NodeKind = 'user' | 'group' | 'object';
export const NODE_KINDS: readonly NodeKind[] = ['user', 'group', 'object'];

/** 1 read, 2 write, 3 manage. */
export type Level = 1 | 2 | 3;

/** What callers may pass for a level: 1..3, read/write/manage, or their text (parsed by parseLevel). */
export type LevelInput = Level | 'read' | 'write' | 'manage' | string;
