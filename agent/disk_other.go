//go:build !unix

package agent

// diskPercent returns 0: disk use is only read on Unix systems.
func diskPercent(string) float64 { return 0 }
