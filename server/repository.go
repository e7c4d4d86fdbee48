package server

import (
	"context"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/internal/validation"
	"github.com/fleetplane/fleetplane/store"
)

func newRepositories(s *Server) *resource[*fleetplanev1.Repository] {
	return &resource[*fleetplanev1.Repository]{
		s: s, kind: store.KindRepository, field: "repository",
		validate: func(_ context.Context, r *fleetplanev1.Repository) error {
			return validation.Repository("repository", r).Err()
		},
		redact:       redactRepository,
		beforeUpdate: keepRepositorySecrets,
	}
}

// redactRepository clears the write-only credentials of a repository.
func redactRepository(r *fleetplanev1.Repository) {
	if h := r.GetSpec().GetHttpConfig(); h != nil {
		h.Password = ""
		h.Token = ""
		h.TlsKey = ""
	}
	if s := r.GetSpec().GetSshConfig(); s != nil {
		s.SshPrivateKey = ""
		s.PrivateKeyPassphrase = ""
	}
}

// keepRepositorySecrets copies each stored credential that the update leaves empty, because
// clients never see the stored values and so cannot send them back. An update that moves the
// repository to another scheme or host keeps no stored credential, so that a client that never
// saw a secret cannot have the server send it to a host of its choice. Such an update must send
// its credentials again, and it is rejected when it sends none while some are stored.
func keepRepositorySecrets(stored, r *fleetplanev1.Repository) error {
	oldSecrets, newSecrets := repositorySecrets(stored), repositorySecrets(r)
	if sameHost(stored.GetSpec().GetUrl(), r.GetSpec().GetUrl()) {
		for i, s := range newSecrets {
			if s.value != nil && *s.value == "" {
				*s.value = oldSecrets[i].get()
			}
		}
		return nil
	}
	for _, s := range newSecrets {
		if s.get() != "" {
			return nil
		}
	}
	var errs validation.List
	for i, s := range newSecrets {
		if s.value != nil && oldSecrets[i].get() != "" {
			errs = append(errs, invalidArgument(s.field, "must be sent again because "+
				"spec.url now names another host, and the server does not send stored "+
				"credentials to a new host"))
		}
	}
	return errs.Err()
}

// secretField points at one credential of a repository. Its value is nil when the config
// block that contains it (httpConfig or sshConfig) is absent.
type secretField struct {
	field string
	value *string
}

func (s secretField) get() string {
	if s.value == nil {
		return ""
	}
	return *s.value
}

// repositorySecrets returns the credentials of r, always in the same order.
func repositorySecrets(r *fleetplanev1.Repository) []secretField {
	h, ssh := r.GetSpec().GetHttpConfig(), r.GetSpec().GetSshConfig()
	fields := []secretField{
		{field: "repository.spec.httpConfig.password"},
		{field: "repository.spec.httpConfig.token"},
		{field: "repository.spec.httpConfig.tls.key"},
		{field: "repository.spec.sshConfig.sshPrivateKey"},
		{field: "repository.spec.sshConfig.privateKeyPassphrase"},
	}
	if h != nil {
		fields[0].value, fields[1].value, fields[2].value = &h.Password, &h.Token, &h.TlsKey
	}
	if ssh != nil {
		fields[3].value, fields[4].value = &ssh.SshPrivateKey, &ssh.PrivateKeyPassphrase
	}
	return fields
}

// sameHost reports whether two repository URLs have the same scheme and host, port included.
// The short SSH form user@host:path is compared as an ssh URL.
func sameHost(a, b string) bool {
	ua, errA := url.Parse(sshURL(a))
	ub, errB := url.Parse(sshURL(b))
	if errA != nil || errB != nil {
		return false
	}
	return ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host)
}

// sshURL rewrites the short SSH form user@host:path to ssh://user@host/path and returns any
// other URL unchanged.
func sshURL(raw string) string {
	if strings.Contains(raw, "://") {
		return raw
	}
	at, colon := strings.Index(raw, "@"), strings.Index(raw, ":")
	if at < 0 || colon < at {
		return raw
	}
	return "ssh://" + raw[:colon] + "/" + raw[colon+1:]
}

// repositoryService serves RepositoryService.
type repositoryService struct {
	r *resource[*fleetplanev1.Repository]
}

func (h *repositoryService) GetRepository(
	ctx context.Context,
	req *connect.Request[fleetplanev1.GetRepositoryRequest],
) (*connect.Response[fleetplanev1.GetRepositoryResponse], error) {
	obj, err := h.r.get(ctx, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.GetRepositoryResponse{Repository: obj}), nil
}

func (h *repositoryService) ListRepositories(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListRepositoriesRequest],
) (*connect.Response[fleetplanev1.ListRepositoriesResponse], error) {
	page, err := h.r.list(ctx, req.Msg.GetOptions())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.ListRepositoriesResponse{Repositories: page.items,
		NextPageToken: page.nextPageToken, ResourceVersion: page.resourceVersion}), nil
}

func (h *repositoryService) CreateRepository(
	ctx context.Context,
	req *connect.Request[fleetplanev1.CreateRepositoryRequest],
) (*connect.Response[fleetplanev1.CreateRepositoryResponse], error) {
	obj, err := h.r.create(ctx, req.Msg.GetRepository())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.CreateRepositoryResponse{Repository: obj}), nil
}

func (h *repositoryService) UpdateRepository(
	ctx context.Context,
	req *connect.Request[fleetplanev1.UpdateRepositoryRequest],
) (*connect.Response[fleetplanev1.UpdateRepositoryResponse], error) {
	obj, err := h.r.update(ctx, req.Msg.GetRepository())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.UpdateRepositoryResponse{Repository: obj}), nil
}

func (h *repositoryService) DeleteRepository(
	ctx context.Context,
	req *connect.Request[fleetplanev1.DeleteRepositoryRequest],
) (*connect.Response[fleetplanev1.DeleteRepositoryResponse], error) {
	if err := h.r.delete(ctx, req.Msg.GetName()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteRepositoryResponse{}), nil
}

func (h *repositoryService) DeleteRepositories(
	ctx context.Context,
	_ *connect.Request[fleetplanev1.DeleteRepositoriesRequest],
) (*connect.Response[fleetplanev1.DeleteRepositoriesResponse], error) {
	n, err := h.r.deleteAll(ctx)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fleetplanev1.DeleteRepositoriesResponse{Deleted: n}), nil
}

func (h *repositoryService) WatchRepositories(
	ctx context.Context,
	req *connect.Request[fleetplanev1.WatchRepositoriesRequest],
	stream *connect.ServerStream[fleetplanev1.WatchRepositoriesResponse],
) error {
	return h.r.watch(ctx, req.Msg.GetOptions(), func() error { return stream.Send(nil) },
		func(typ fleetplanev1.WatchEventType, obj *fleetplanev1.Repository, version int64) error {
			return stream.Send(&fleetplanev1.WatchRepositoriesResponse{
				Type: typ, Repository: obj, ResourceVersion: formatVersion(version)})
		})
}
