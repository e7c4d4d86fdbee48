package main

import (
	"fmt"
	"strings"

	"github.com/fleetplane/fleetplane/client"
)

// resolveKind finds the kind that a command line names: the kind's name or plural, a short
// name such as "dev", or a short name's plural such as "devs", ignoring case.
func resolveKind(name string) (*client.Kind, error) {
	lower := strings.ToLower(strings.TrimSpace(name))
	for _, k := range client.Kinds() {
		for _, accepted := range acceptedKindNames(k) {
			if lower == accepted {
				return k, nil
			}
		}
	}
	var choices []string
	for _, k := range client.Kinds() {
		names := acceptedKindNames(k)
		choices = append(choices, fmt.Sprintf("%s (%s)", names[0], strings.Join(names[1:], ", ")))
	}
	return nil, fmt.Errorf("unknown resource kind %q; use one of %s", name,
		strings.Join(choices, ", "))
}

// acceptedKindNames returns the lowercase names that resolveKind accepts for k, the singular
// first.
func acceptedKindNames(k *client.Kind) []string {
	names := []string{strings.ToLower(k.Name), k.Plural}
	for _, alias := range k.Aliases {
		names = append(names, alias, alias+"s")
	}
	return names
}
