package crdt

// SetNodeSizes shrinks the B-tree and index fan-outs so that small test
// documents exercise splits; it returns a function restoring the defaults.
func SetNodeSizes(leaf, node, chunk int) (restore func()) {
	l, n, c := leafCap, nodeCap, idChunkCap
	leafCap, nodeCap, idChunkCap = leaf, node, chunk
	return func() { leafCap, nodeCap, idChunkCap = l, n, c }
}
