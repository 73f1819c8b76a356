package eventstream

// SpareBuffers returns how many finished Sends' buffers t keeps for the
// next ones, and how many rows the smallest of them has room for.
func SpareBuffers(t *Target) (n, rows int) {
	t.spare.mu.Lock()
	defer t.spare.mu.Unlock()
	for i, b := range t.spare.bufs {
		if c := min(cap(b.errs), cap(b.idx)); i == 0 || c < rows {
			rows = c
		}
	}
	return len(t.spare.bufs), rows
}
