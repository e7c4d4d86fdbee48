package server

import (
	"context"

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
// clients never see the stored values and so cannot send them back.
func keepRepositorySecrets(stored, r *fleetplanev1.Repository) error {
	oldHTTP, newHTTP := stored.GetSpec().GetHttpConfig(), r.GetSpec().GetHttpConfig()
	if oldHTTP != nil && newHTTP != nil {
		keep(&newHTTP.Password, oldHTTP.GetPassword())
		keep(&newHTTP.Token, oldHTTP.GetToken())
		keep(&newHTTP.TlsKey, oldHTTP.GetTlsKey())
	}
	oldSSH, newSSH := stored.GetSpec().GetSshConfig(), r.GetSpec().GetSshConfig()
	if oldSSH != nil && newSSH != nil {
		keep(&newSSH.SshPrivateKey, oldSSH.GetSshPrivateKey())
		keep(&newSSH.PrivateKeyPassphrase, oldSSH.GetPrivateKeyPassphrase())
	}
	return nil
}

func keep(field *string, stored string) {
	if *field == "" {
		*field = stored
	}
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
