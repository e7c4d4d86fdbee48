// Package tasks implements Fleetplane's task graph and the asynchronous tasks it triggers:
// validating fleet templates, matching devices to fleets, rolling templates out to devices,
// rendering device specs for agents, and following repository changes.
//
// # Task graph
//
// Hook is the store's ChangeHook. It runs inside the transaction of every resource write and
// enqueues the triggered tasks there, so a write and its tasks commit together (the outbox). A
// task is a kind and a key naming one object, "Kind/name"; a pending task with the same kind
// and key absorbs a new trigger.
//
//	store update                                         task                 key
//	fleet created, fleet spec.template changed           FleetValidate        Fleet/NAME
//	fleet config source changed (via RepositoryUpdates)  FleetValidate        Fleet/NAME
//	fleet created, selector changed, fleet deleted       FleetSelectorMatch   Fleet/NAME
//	device created, labels changed, device deleted       FleetSelectorMatch   Device/NAME
//	repository created, spec or status changed, deleted  RepositoryUpdates    Repository/NAME
//	device created, spec changed, device deleted         DeviceRender         Device/NAME
//	device config source changed (via RepositoryUpdates) DeviceRender         Device/NAME
//	TemplateVersion created                              FleetRollout         Fleet/FLEET
//	device labels or owner changed                       FleetRollout         Device/NAME
//
// Deleting every object of a kind (DeleteAll) writes one Deleted change per object, so "all
// fleets deleted", "all devices deleted" and "all repositories deleted" follow the per-object
// rows. Status-only writes trigger nothing, except for repositories, whose Accessible condition
// matters to config sources. So a task that only updates conditions never triggers itself.
//
// What the tasks write, and so trigger in turn: FleetValidate creates TemplateVersions
// (FleetRollout); FleetSelectorMatch changes device owners (FleetRollout); FleetRollout changes
// device specs (DeviceRender); RepositoryUpdates triggers FleetValidate and DeviceRender directly.
//
// # Task contracts
//
// FleetValidate (Fleet/NAME) checks the fleet's template with ValidateTemplate and checks that
// every repository named by a gitRef or httpRef exists and has the matching type. If the
// template is valid and differs from the fleet's latest TemplateVersion, it creates the
// immutable TemplateVersion "NAME-GENERATION" owned by "Fleet/NAME". It then sets the fleet's
// Valid condition: True naming the version, or False listing every problem, with a Warning
// event. A missing fleet is skipped.
//
// FleetSelectorMatch decides each device's owner from its labels and every fleet's selector:
// the single matching fleet owns it. With several matches the device has no owner and a
// MultipleOwners condition names the fleets, sorted. With none it is released. A missing or
// empty selector matches nothing. Key Device/NAME decides one device. Key Fleet/NAME decides
// every device the fleet selects, owns, or competes for, which also covers a deleted fleet and
// the devices an old selector matched. Devices owned by something other than a fleet are left
// alone.
//
// FleetRollout renders the fleet's latest TemplateVersion (highest fleet generation) for each
// owned device into its spec, and sets the annotation fleetplane.dev/template-version. A
// device that lacks a label the template prints gets TemplateApplied=False and a Warning event,
// keeps its previous spec, and does not hold up the rest of the fleet. Key Fleet/NAME rolls
// every owned device; key Device/NAME rolls one. A released device keeps its last spec.
//
// DeviceRender turns a device spec into the RenderedDeviceSpec that the agent applies and stores
// it with PutRendered, which raises the rendered version only when the content hash changes.
// It sets SpecValid, and calls Deps.Notify after a commit that stored a new version. A spec it
// cannot render (for example a gitRef, not supported yet) sets SpecValid=False and leaves the
// last rendered spec in place. A deleted device's rendered spec is removed.
//
// RepositoryUpdates (Repository/NAME) triggers FleetValidate for each fleet and DeviceRender
// for each device whose config references the repository.
//
// # Idempotence and ordering
//
// Each task reads the current state and writes what that state implies, never a delta from the
// trigger. Writes are skipped when the stored value already equals the result. Conditions are
// compared on type, status, reason, message and observed generation, and keep their transition
// time while the status holds. So a task that runs twice, or after a crash between its commit and
// the queue update, writes nothing the second time. Because the result depends only on the
// state, a set of writes leads to the same owners and specs in whatever order the triggers run.
// A task that works on a whole fleet commits in batches of devices. Each batch re-reads its
// devices, so a task cut short is completed by its retry.
//
// Template parameters are described in template.go.
package tasks
