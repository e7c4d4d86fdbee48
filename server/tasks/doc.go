// Package tasks implements Fleetplane's task graph and the tasks it triggers.
package tasks
