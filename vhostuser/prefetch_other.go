//go:build !amd64

package vhostuser

// prefetchRead and prefetchWrite do nothing where no prefetch is written
// (see prefetch_amd64.go): the CPU loads the lines when they are touched.
func prefetchRead(spans []lineSpan)  {}
func prefetchWrite(spans []lineSpan) {}
