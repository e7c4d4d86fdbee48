package resourcefile

import (
	"fmt"
	"regexp"
	"strconv"

	yamlv3 "go.yaml.in/yaml/v3"
)

// duplicateKeyMessage matches the error of sigs.k8s.io/yaml's strict conversion for a key that
// appears twice in one mapping, such as `line 3: key "name" already set in map`.
var duplicateKeyMessage = regexp.MustCompile(`line (\d+): key "((?:[^"\\]|\\.)*)" already set in map`)

// duplicateKeyError turns a duplicate-key error of the strict YAML conversion into an *Error
// that names the key's path, or returns nil for any other error.
func duplicateKeyError(source string, index int, c chunk, err error) *Error {
	m := duplicateKeyMessage.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	line, _ := strconv.Atoi(m[1])
	key := m[2]
	if unquoted, err := strconv.Unquote(`"` + key + `"`); err == nil {
		key = unquoted
	}
	path := key
	var root yamlv3.Node
	// The strict conversion reports the line and the key but not the mappings around it, so
	// the path comes from a second parse that keeps every key with its line.
	if yamlv3.Unmarshal(c.text, &root) == nil {
		if found, foundLine, ok := findDuplicateKey(&root, ""); ok {
			path, line = found, foundLine
		}
	}
	return &Error{Source: source, Document: index, Line: c.line + line - 1, Field: path,
		Problem: fmt.Sprintf("duplicate key %q; keep one of them", key)}
}

// findDuplicateKey returns the path and line of the first key, in document order, that appears
// twice in one mapping under n.
func findDuplicateKey(n *yamlv3.Node, path string) (string, int, bool) {
	switch n.Kind {
	case yamlv3.DocumentNode:
		for _, child := range n.Content {
			if found, line, ok := findDuplicateKey(child, path); ok {
				return found, line, true
			}
		}
	case yamlv3.SequenceNode:
		for i, child := range n.Content {
			if found, line, ok := findDuplicateKey(child, fmt.Sprintf("%s[%d]", path, i)); ok {
				return found, line, true
			}
		}
	case yamlv3.MappingNode:
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			keyPath := mapPath(path, key.Value)
			if seen[key.Value] {
				return keyPath, key.Line, true
			}
			seen[key.Value] = true
			if found, line, ok := findDuplicateKey(n.Content[i+1], keyPath); ok {
				return found, line, true
			}
		}
	}
	return "", 0, false
}
