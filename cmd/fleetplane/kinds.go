package main

import (
	"fmt"
	"strings"

	"github.com/fleetplane/fleetplane/client"
)

// resolveKind finds the kind that a command line names, as client.ResolveKind does, and lists
// every accepted name, plurals included, when there is none.
func resolveKind(name string) (*client.Kind, error) {
	if kind, err := client.ResolveKind(name); err == nil {
		return kind, nil
	}
	var choices []string
	for _, k := range client.Kinds() {
		names := client.AcceptedNames(k)
		choices = append(choices, fmt.Sprintf("%s (%s)", names[0], strings.Join(names[1:], ", ")))
	}
	return nil, fmt.Errorf("unknown resource kind %q; use one of %s", name,
		strings.Join(choices, ", "))
}
