package engine

// MaxMonitors is how many monitors (vknetctl monitor) may be attached at
// once. Each holds a file descriptor, which the daemon's budget counts.
const MaxMonitors = maxMonitors
