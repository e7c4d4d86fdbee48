package tasks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Reasons of the fleet's Valid condition and of its events.
const (
	reasonTemplateValid          = "TemplateValid"
	reasonTemplateInvalid        = "TemplateInvalid"
	reasonTemplateRejected       = "TemplateRejected"
	reasonTemplateVersionCreated = "TemplateVersionCreated"
)

// fleetValidate runs FleetValidate for key Fleet/NAME.
func (r *runner) fleetValidate(ctx context.Context, key string) error {
	name, err := nameOf(key, store.KindFleet)
	if err != nil {
		return permanent(err)
	}
	return r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		return validateFleet(ctx, tx, name)
	})
}

func validateFleet(ctx context.Context, tx store.Tx, name string) error {
	obj, err := tx.Get(ctx, store.KindFleet, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	fleet := obj.(*fleetplanev1.Fleet)

	problems, err := fleetProblems(ctx, tx, fleet)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return rejectFleet(ctx, tx, fleet, problems)
	}

	version, err := ensureTemplateVersion(ctx, tx, fleet)
	if err != nil {
		return err
	}
	_, err = updateFleetCondition(ctx, tx, fleet, &fleetplanev1.Condition{
		Type:               ConditionValid,
		Status:             statusTrue,
		Reason:             reasonTemplateValid,
		Message:            "template version " + version,
		ObservedGeneration: fleet.GetMetadata().GetGeneration(),
	})
	return err
}

// fleetProblems returns every reason the fleet's template cannot become a template version.
func fleetProblems(ctx context.Context, tx store.Tx, fleet *fleetplanev1.Fleet) ([]string, error) {
	template := fleet.GetSpec().GetTemplate()
	if template.GetSpec() == nil {
		return []string{"spec.template.spec is missing; set the device spec that the fleet's devices get"}, nil
	}
	var problems []string
	for _, err := range ValidateTemplate(template) {
		problems = append(problems, "spec.template."+err.Error())
	}
	for i, provider := range template.GetSpec().GetConfig() {
		path := fmt.Sprintf("spec.template.spec.config[%d]", i)
		p, err := sourceProblems(ctx, tx, path, provider)
		if err != nil {
			return nil, err
		}
		problems = append(problems, p...)
	}
	return problems, nil
}

// sourceProblems checks that a config provider's gitRef or httpRef names a repository of the
// right type.
func sourceProblems(
	ctx context.Context, tx store.Tx, path string, provider *fleetplanev1.ConfigProviderSpec,
) ([]string, error) {
	var problems []string
	check := func(field, repository, wantType string) error {
		if repository == "" {
			problems = append(problems, fmt.Sprintf("%s.%s.repository is missing; name a Repository", path, field))
			return nil
		}
		if strings.Contains(repository, "{{") {
			// NOTE: a templated repository name differs per device, so only rendering can check it.
			return nil
		}
		obj, err := tx.Get(ctx, store.KindRepository, repository)
		if errors.Is(err, store.ErrNotFound) {
			problems = append(problems, fmt.Sprintf(
				"%s.%s.repository: repository %q not found; create it or fix the name",
				path, field, repository))
			return nil
		}
		if err != nil {
			return err
		}
		got := obj.(*fleetplanev1.Repository).GetSpec().GetType()
		if got != "" && got != wantType {
			problems = append(problems, fmt.Sprintf(
				"%s.%s.repository: repository %q has type %q, but %s needs a %s repository",
				path, field, repository, got, field, wantType))
		}
		return nil
	}
	if ref := provider.GetGitRef(); ref != nil {
		if err := check("gitRef", ref.GetRepository(), "git"); err != nil {
			return nil, err
		}
	}
	if ref := provider.GetHttpRef(); ref != nil {
		if err := check("httpRef", ref.GetRepository(), "http"); err != nil {
			return nil, err
		}
	}
	return problems, nil
}

// rejectFleet sets the fleet's Valid condition to False and, when it changed, records a
// Warning event with the same message.
func rejectFleet(ctx context.Context, tx store.Tx, fleet *fleetplanev1.Fleet, problems []string) error {
	message := strings.Join(problems, "; ")
	changed, err := updateFleetCondition(ctx, tx, fleet, &fleetplanev1.Condition{
		Type:               ConditionValid,
		Status:             statusFalse,
		Reason:             reasonTemplateInvalid,
		Message:            message,
		ObservedGeneration: fleet.GetMetadata().GetGeneration(),
	})
	if err != nil || !changed {
		return err
	}
	return recordWarning(ctx, tx, store.KindFleet, fleet.GetMetadata().GetName(),
		TaskFleetValidate, reasonTemplateRejected, message)
}

// ensureTemplateVersion returns the name of the fleet's latest template version, creating
// "FLEET-GENERATION" when the latest one holds a different template. Running it twice creates
// one version.
func ensureTemplateVersion(ctx context.Context, tx store.Tx, fleet *fleetplanev1.Fleet) (string, error) {
	fleetName := fleet.GetMetadata().GetName()
	latest, err := latestTemplateVersion(ctx, tx, fleetName)
	if err != nil {
		return "", err
	}
	template := fleet.GetSpec().GetTemplate()
	if latest != nil && proto.Equal(latest.GetStatus().GetTemplate(), template) {
		return latest.GetMetadata().GetName(), nil
	}

	generation := fleet.GetMetadata().GetGeneration()
	// NOTE: a fleet name close to the 253-character limit gives a version name over it.
	name := fmt.Sprintf("%s-%d", fleetName, generation)
	tv := &fleetplanev1.TemplateVersion{
		Metadata: &fleetplanev1.ObjectMeta{Name: name, Owner: Key(store.KindFleet, fleetName)},
		Spec:     &fleetplanev1.TemplateVersionSpec{Fleet: fleetName},
		Status: &fleetplanev1.TemplateVersionStatus{
			Template:        proto.Clone(template).(*fleetplanev1.DeviceTemplate),
			UpdatedAt:       timestamppb.New(time.Now()),
			FleetGeneration: generation,
		},
	}
	_, err = tx.Create(ctx, tv)
	if errors.Is(err, store.ErrAlreadyExists) {
		return name, nil
	}
	if err != nil {
		return "", err
	}
	err = recordNormal(ctx, tx, store.KindFleet, fleetName, TaskFleetValidate,
		reasonTemplateVersionCreated, "created template version "+name)
	return name, err
}

// latestTemplateVersion returns the fleet's template version with the highest fleet
// generation, or nil when it has none.
func latestTemplateVersion(
	ctx context.Context, tx store.Tx, fleet string,
) (*fleetplanev1.TemplateVersion, error) {
	var latest *fleetplanev1.TemplateVersion
	opts := store.ListOptions{FieldSelector: "metadata.owner=" + Key(store.KindFleet, fleet)}
	for {
		page, err := tx.List(ctx, store.KindTemplateVersion, opts)
		if err != nil {
			return nil, fmt.Errorf("list template versions of fleet %s: %w", fleet, err)
		}
		for _, obj := range page.Items {
			tv := obj.(*fleetplanev1.TemplateVersion)
			if latest == nil || tv.GetStatus().GetFleetGeneration() > latest.GetStatus().GetFleetGeneration() {
				latest = tv
			}
		}
		if page.NextPageToken == "" {
			return latest, nil
		}
		opts.PageToken = page.NextPageToken
	}
}

// updateFleetCondition sets a fleet condition and writes the status when it changed.
func updateFleetCondition(
	ctx context.Context, tx store.Tx, fleet *fleetplanev1.Fleet, want *fleetplanev1.Condition,
) (bool, error) {
	if fleet.Status == nil {
		fleet.Status = &fleetplanev1.FleetStatus{}
	}
	conditions, changed := setCondition(fleet.Status.Conditions, want, time.Now())
	if !changed {
		return false, nil
	}
	fleet.Status.Conditions = conditions
	if _, err := tx.UpdateStatus(ctx, fleet); err != nil {
		return false, err
	}
	return true, nil
}
