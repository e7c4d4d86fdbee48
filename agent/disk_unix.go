//go:build unix

package agent

import "syscall"

// diskPercent returns the used share of the file system that holds path, counting the blocks
// reserved for root as not available (as df does), or 0 when it cannot be read.
func diskPercent(path string) float64 {
	if path == "" {
		path = "/"
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0
	}
	used := float64(st.Blocks - st.Bfree)
	usable := used + float64(st.Bavail)
	if usable == 0 {
		return 0
	}
	return 100 * used / usable
}
