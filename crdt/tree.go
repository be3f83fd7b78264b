package crdt

// The position index is an order-statistic B-tree over span handles. Leaves
// and inner nodes live in arenas addressed by int32, so the garbage collector
// never scans the index and a clone is a handful of slice copies. Every child
// carries the number of live code points under it, which turns "the span
// holding code point p" into one root-to-leaf descent.

// Node capacities. Variables rather than constants so tests can shrink them
// and exercise splits on small documents (diamond-types does the same in
// debug builds).
var (
	leafCap = maxLeafCap
	nodeCap = maxNodeCap
)

// The arrays are inline, one slot larger than the capacity so that an
// insert can overflow before the split; nothing in the tree is a pointer.
const (
	maxLeafCap = 32
	maxNodeCap = 16
)

type leaf struct {
	arr    [maxLeafCap + 1]int32 // span handles in document order; arr[:n]
	n      int32
	width  int   // live code points in this leaf
	parent int32 // -1 when the leaf is the root
	prev   int32 // neighbouring leaves in document order, -1 at the ends
	next   int32
}

func (l *leaf) items() []int32 { return l.arr[:l.n] }

type node struct {
	kidArr   [maxNodeCap + 1]int32 // leaf handles when leafKids, else node handles
	wArr     [maxNodeCap + 1]int   // live code points under each kid
	nk       int32
	parent   int32
	leafKids bool
}

func (n *node) kids() []int32 { return n.kidArr[:n.nk] }
func (n *node) widths() []int { return n.wArr[:n.nk] }

type tree struct {
	leaves []leaf
	nodes  []node
	root   int32 // a leaf when height == 0, else a node
	height int
	first  int32 // leftmost leaf

	// A cursor cache for runs of nearby edits (typing): the last leaf found
	// and the live code points before it. Edits inside that leaf keep it
	// valid; a width change anywhere else drops it.
	cLeaf  int32 // -1 when empty
	cStart int
}

func newTree() tree {
	t := tree{root: 0, first: 0, cLeaf: -1}
	t.leaves = append(t.leaves, leaf{parent: -1, prev: -1, next: -1})
	return t
}

func (t *tree) clone() tree {
	c := *t
	c.leaves = append([]leaf(nil), t.leaves...)
	c.nodes = append([]node(nil), t.nodes...)
	return c
}

// width returns the live code points in the whole tree.
func (t *tree) width() int {
	if t.height == 0 {
		return t.leaves[t.root].width
	}
	s := 0
	for _, w := range t.nodes[t.root].widths() {
		s += w
	}
	return s
}

// findLeaf descends to the leaf holding live code point c (0-based) and
// returns it with the number of live code points before that leaf. c must be
// < t.width().
func (t *tree) findLeaf(c int) (int32, int) {
	if l := t.cLeaf; l >= 0 && c >= t.cStart && c < t.cStart+t.leaves[l].width {
		return l, t.cStart
	}
	h := t.root
	before := 0
	for lvl := t.height; lvl > 0; lvl-- {
		n := &t.nodes[h]
		i := 0
		for ; i < len(n.kids())-1; i++ {
			if c < n.widths()[i] {
				break
			}
			c -= n.widths()[i]
			before += n.widths()[i]
		}
		h = n.kids()[i]
	}
	t.cLeaf, t.cStart = h, before
	return h, before
}

// addWidth adds d to the width of leaf l and of every ancestor.
func (t *tree) addWidth(l int32, d int) {
	if d == 0 {
		return
	}
	if l != t.cLeaf {
		t.cLeaf = -1
	}
	t.leaves[l].width += d
	child := l
	p := t.leaves[l].parent
	for p >= 0 {
		n := &t.nodes[p]
		for i, k := range n.kids() {
			if k == child {
				n.widths()[i] += d
				break
			}
		}
		child = p
		p = n.parent
	}
}

// leafStart returns the number of live code points before leaf l.
func (t *tree) leafStart(l int32) int {
	before := 0
	child := l
	p := t.leaves[l].parent
	for p >= 0 {
		n := &t.nodes[p]
		for i, k := range n.kids() {
			if k == child {
				break
			}
			before += n.widths()[i]
		}
		child = p
		p = n.parent
	}
	return before
}

func (t *tree) setParent(n *node, kid, p int32) {
	if n.leafKids {
		t.leaves[kid].parent = p
	} else {
		t.nodes[kid].parent = p
	}
}

// insertKid puts kid (of width w) into node p right after the slot holding
// after, splitting p upwards when it overflows.
func (t *tree) insertKid(p int32, after int32, kid int32, w int) {
	n := &t.nodes[p]
	at := 0
	for i, k := range n.kids() {
		if k == after {
			at = i + 1
			break
		}
	}
	copy(n.kidArr[at+1:n.nk+1], n.kidArr[at:n.nk])
	n.kidArr[at] = kid
	copy(n.wArr[at+1:n.nk+1], n.wArr[at:n.nk])
	n.wArr[at] = w
	n.nk++
	t.setParent(n, kid, p)
	if int(n.nk) <= nodeCap {
		return
	}
	// Split p in half and hang the right half next to it.
	half := n.nk / 2
	right := node{nk: n.nk - half, parent: n.parent, leafKids: n.leafKids}
	copy(right.kidArr[:], n.kidArr[half:n.nk])
	copy(right.wArr[:], n.wArr[half:n.nk])
	n.nk = half
	rw := 0
	for _, x := range right.widths() {
		rw += x
	}
	rh := int32(len(t.nodes))
	t.nodes = append(t.nodes, right)
	rn := &t.nodes[rh]
	for _, k := range rn.kids() {
		t.setParent(rn, k, rh)
	}
	t.linkSplit(t.nodes[p].parent, p, rh, rw, false)
}

// linkSplit hangs the new right half rh (of width rw) of the split child
// left under left's parent pp, growing a new root when left was the root.
func (t *tree) linkSplit(pp, left, rh int32, rw int, leaves bool) {
	if pp < 0 {
		lw := 0
		if leaves {
			lw = t.leaves[left].width
		} else {
			for _, x := range t.nodes[left].widths() {
				lw += x
			}
		}
		rootH := int32(len(t.nodes))
		root := node{nk: 2, parent: -1, leafKids: leaves}
		root.kidArr[0], root.kidArr[1] = left, rh
		root.wArr[0], root.wArr[1] = lw, rw
		t.nodes = append(t.nodes, root)
		if leaves {
			t.leaves[left].parent = rootH
			t.leaves[rh].parent = rootH
		} else {
			t.nodes[left].parent = rootH
			t.nodes[rh].parent = rootH
		}
		t.root = rootH
		t.height++
		return
	}
	pn := &t.nodes[pp]
	for i, k := range pn.kids() {
		if k == left {
			pn.widths()[i] -= rw
			break
		}
	}
	t.insertKid(pp, left, rh, rw)
}
