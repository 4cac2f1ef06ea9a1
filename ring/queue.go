package ring

// Queue is a bounded FIFO of buffer references: a port's transmit queue.
// Its storage is allocated once by NewQueue; Push on a full queue fails
// instead of growing, which is how a stuck receiver costs only its own
// frames.
type Queue struct {
	items []Ref
	head  int // index of the oldest item
	n     int
}

// NewQueue returns an empty queue that holds at most capacity references.
func NewQueue(capacity int) Queue {
	if capacity < 1 {
		capacity = 1
	}
	return Queue{items: make([]Ref, capacity)}
}

// Push appends r, or reports false when the queue is full.
func (q *Queue) Push(r Ref) bool {
	if q.n == len(q.items) {
		return false
	}
	i := q.head + q.n
	if i >= len(q.items) {
		i -= len(q.items)
	}
	q.items[i] = r
	q.n++
	return true
}

// At returns the i-th oldest reference (0 is the head).
func (q *Queue) At(i int) Ref {
	j := q.head + i
	if j >= len(q.items) {
		j -= len(q.items)
	}
	return q.items[j]
}

// Drop removes the n oldest references without releasing them; the caller
// has already sent or released those buffers.
func (q *Queue) Drop(n int) {
	if n > q.n {
		n = q.n
	}
	q.head += n
	if q.head >= len(q.items) {
		q.head -= len(q.items)
	}
	q.n -= n
	if q.n == 0 {
		q.head = 0
	}
}

// Len is the number of queued references.
func (q *Queue) Len() int { return q.n }

// Cap is the most references the queue holds.
func (q *Queue) Cap() int { return len(q.items) }
