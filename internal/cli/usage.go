package cli

import "fmt"

// UsageError is a command-line mistake: the commands exit with status 2
// for it, like getopt tools, and their message names the value and the fix.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error { return UsageError{fmt.Sprintf(format, args...)} }
