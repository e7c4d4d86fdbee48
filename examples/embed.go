// Package examples contains the example resource files, embedded so that programs such as
// "fleetplane demo" can apply them without a source checkout.
package examples

import "embed"

// Files contains every example resource file (*.yaml) of this folder.
//
//go:embed *.yaml
var Files embed.FS
