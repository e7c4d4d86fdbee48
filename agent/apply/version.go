package apply

import "strconv"

// CompareVersions orders two rendered versions and returns -1, 0 or +1. The empty version is
// lower than any other. The server issues decimal integers, which compare by number. Other
// strings compare by length and then byte by byte, the same order for integers without
// leading zeros.
func CompareVersions(a, b string) int {
	if a == b {
		return 0
	}
	na, errA := strconv.ParseUint(a, 10, 64)
	nb, errB := strconv.ParseUint(b, 10, 64)
	if errA == nil && errB == nil {
		if na < nb {
			return -1
		}
		return 1
	}
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	if a < b {
		return -1
	}
	return 1
}

// Newer reports whether version v is greater than version than.
func Newer(v, than string) bool {
	return CompareVersions(v, than) > 0
}
