package client

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

var templateVersionOps = ops{
	get: func(ctx context.Context, c *Client, name string) (proto.Message, error) {
		r, err := c.TemplateVersions.GetTemplateVersion(ctx, connect.NewRequest(
			&fleetplanev1.GetTemplateVersionRequest{Name: name}))
		return response(r, err, (*fleetplanev1.GetTemplateVersionResponse).GetTemplateVersion)
	},
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		r, err := c.TemplateVersions.ListTemplateVersions(ctx, connect.NewRequest(
			&fleetplanev1.ListTemplateVersionsRequest{Options: listOptions(o)}))
		if err != nil {
			return nil, err
		}
		return &Page{items(r.Msg.GetTemplateVersions()), r.Msg.GetNextPageToken(),
			r.Msg.GetResourceVersion()}, nil
	},
	delete: func(ctx context.Context, c *Client, name string) error {
		_, err := c.TemplateVersions.DeleteTemplateVersion(ctx, connect.NewRequest(
			&fleetplanev1.DeleteTemplateVersionRequest{Name: name}))
		return err
	},
	watch: func(ctx context.Context, c *Client, o *fleetplanev1.WatchOptions) (*Watcher, error) {
		s, err := c.TemplateVersions.WatchTemplateVersions(ctx, connect.NewRequest(
			&fleetplanev1.WatchTemplateVersionsRequest{Options: o}))
		return newWatcher(s, err, func(r *fleetplanev1.WatchTemplateVersionsResponse) WatchEvent {
			return WatchEvent{r.GetType(), r.GetTemplateVersion(), r.GetResourceVersion()}
		})
	},
}

var repositoryOps = ops{
	get: func(ctx context.Context, c *Client, name string) (proto.Message, error) {
		r, err := c.Repositories.GetRepository(ctx, connect.NewRequest(
			&fleetplanev1.GetRepositoryRequest{Name: name}))
		return response(r, err, (*fleetplanev1.GetRepositoryResponse).GetRepository)
	},
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		r, err := c.Repositories.ListRepositories(ctx, connect.NewRequest(
			&fleetplanev1.ListRepositoriesRequest{Options: listOptions(o)}))
		if err != nil {
			return nil, err
		}
		return &Page{items(r.Msg.GetRepositories()), r.Msg.GetNextPageToken(),
			r.Msg.GetResourceVersion()}, nil
	},
	create: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.Repositories.CreateRepository(ctx, connect.NewRequest(
			&fleetplanev1.CreateRepositoryRequest{Repository: m.(*fleetplanev1.Repository)}))
		return response(r, err, (*fleetplanev1.CreateRepositoryResponse).GetRepository)
	},
	update: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.Repositories.UpdateRepository(ctx, connect.NewRequest(
			&fleetplanev1.UpdateRepositoryRequest{Repository: m.(*fleetplanev1.Repository)}))
		return response(r, err, (*fleetplanev1.UpdateRepositoryResponse).GetRepository)
	},
	delete: func(ctx context.Context, c *Client, name string) error {
		_, err := c.Repositories.DeleteRepository(ctx, connect.NewRequest(
			&fleetplanev1.DeleteRepositoryRequest{Name: name}))
		return err
	},
	deleteAll: func(ctx context.Context, c *Client) (int64, error) {
		r, err := c.Repositories.DeleteRepositories(ctx, connect.NewRequest(
			&fleetplanev1.DeleteRepositoriesRequest{}))
		if err != nil {
			return 0, err
		}
		return r.Msg.GetDeleted(), nil
	},
	watch: func(ctx context.Context, c *Client, o *fleetplanev1.WatchOptions) (*Watcher, error) {
		s, err := c.Repositories.WatchRepositories(ctx, connect.NewRequest(
			&fleetplanev1.WatchRepositoriesRequest{Options: o}))
		return newWatcher(s, err, func(r *fleetplanev1.WatchRepositoriesResponse) WatchEvent {
			return WatchEvent{r.GetType(), r.GetRepository(), r.GetResourceVersion()}
		})
	},
}

var resourceSyncOps = ops{
	get: func(ctx context.Context, c *Client, name string) (proto.Message, error) {
		r, err := c.ResourceSyncs.GetResourceSync(ctx, connect.NewRequest(
			&fleetplanev1.GetResourceSyncRequest{Name: name}))
		return response(r, err, (*fleetplanev1.GetResourceSyncResponse).GetResourceSync)
	},
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		r, err := c.ResourceSyncs.ListResourceSyncs(ctx, connect.NewRequest(
			&fleetplanev1.ListResourceSyncsRequest{Options: listOptions(o)}))
		if err != nil {
			return nil, err
		}
		return &Page{items(r.Msg.GetResourceSyncs()), r.Msg.GetNextPageToken(),
			r.Msg.GetResourceVersion()}, nil
	},
	create: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.ResourceSyncs.CreateResourceSync(ctx, connect.NewRequest(
			&fleetplanev1.CreateResourceSyncRequest{ResourceSync: m.(*fleetplanev1.ResourceSync)}))
		return response(r, err, (*fleetplanev1.CreateResourceSyncResponse).GetResourceSync)
	},
	update: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.ResourceSyncs.UpdateResourceSync(ctx, connect.NewRequest(
			&fleetplanev1.UpdateResourceSyncRequest{ResourceSync: m.(*fleetplanev1.ResourceSync)}))
		return response(r, err, (*fleetplanev1.UpdateResourceSyncResponse).GetResourceSync)
	},
	delete: func(ctx context.Context, c *Client, name string) error {
		_, err := c.ResourceSyncs.DeleteResourceSync(ctx, connect.NewRequest(
			&fleetplanev1.DeleteResourceSyncRequest{Name: name}))
		return err
	},
	watch: func(ctx context.Context, c *Client, o *fleetplanev1.WatchOptions) (*Watcher, error) {
		s, err := c.ResourceSyncs.WatchResourceSyncs(ctx, connect.NewRequest(
			&fleetplanev1.WatchResourceSyncsRequest{Options: o}))
		return newWatcher(s, err, func(r *fleetplanev1.WatchResourceSyncsResponse) WatchEvent {
			return WatchEvent{r.GetType(), r.GetResourceSync(), r.GetResourceVersion()}
		})
	},
}

var enrollmentRequestOps = ops{
	get: func(ctx context.Context, c *Client, name string) (proto.Message, error) {
		r, err := c.EnrollmentRequests.GetEnrollmentRequest(ctx, connect.NewRequest(
			&fleetplanev1.GetEnrollmentRequestRequest{Name: name}))
		return response(r, err, (*fleetplanev1.GetEnrollmentRequestResponse).GetEnrollmentRequest)
	},
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		r, err := c.EnrollmentRequests.ListEnrollmentRequests(ctx, connect.NewRequest(
			&fleetplanev1.ListEnrollmentRequestsRequest{Options: listOptions(o)}))
		if err != nil {
			return nil, err
		}
		return &Page{items(r.Msg.GetEnrollmentRequests()), r.Msg.GetNextPageToken(),
			r.Msg.GetResourceVersion()}, nil
	},
	create: func(ctx context.Context, c *Client, m proto.Message) (proto.Message, error) {
		r, err := c.EnrollmentRequests.CreateEnrollmentRequest(ctx, connect.NewRequest(
			&fleetplanev1.CreateEnrollmentRequestRequest{
				EnrollmentRequest: m.(*fleetplanev1.EnrollmentRequest)}))
		return response(r, err,
			(*fleetplanev1.CreateEnrollmentRequestResponse).GetEnrollmentRequest)
	},
	delete: func(ctx context.Context, c *Client, name string) error {
		_, err := c.EnrollmentRequests.DeleteEnrollmentRequest(ctx, connect.NewRequest(
			&fleetplanev1.DeleteEnrollmentRequestRequest{Name: name}))
		return err
	},
	watch: func(ctx context.Context, c *Client, o *fleetplanev1.WatchOptions) (*Watcher, error) {
		s, err := c.EnrollmentRequests.WatchEnrollmentRequests(ctx, connect.NewRequest(
			&fleetplanev1.WatchEnrollmentRequestsRequest{Options: o}))
		return newWatcher(s, err, func(r *fleetplanev1.WatchEnrollmentRequestsResponse) WatchEvent {
			return WatchEvent{r.GetType(), r.GetEnrollmentRequest(), r.GetResourceVersion()}
		})
	},
}

var eventOps = ops{
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		r, err := c.Events.ListEvents(ctx, connect.NewRequest(
			&fleetplanev1.ListEventsRequest{Options: listOptions(o)}))
		if err != nil {
			return nil, err
		}
		return &Page{items(r.Msg.GetEvents()), r.Msg.GetNextPageToken(),
			r.Msg.GetResourceVersion()}, nil
	},
	watch: func(ctx context.Context, c *Client, o *fleetplanev1.WatchOptions) (*Watcher, error) {
		s, err := c.Events.WatchEvents(ctx, connect.NewRequest(&fleetplanev1.WatchEventsRequest{Options: o}))
		return newWatcher(s, err, func(r *fleetplanev1.WatchEventsResponse) WatchEvent {
			return WatchEvent{r.GetType(), r.GetEvent(), r.GetResourceVersion()}
		})
	},
}

var taskOps = ops{
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		req := &fleetplanev1.ListTasksRequest{PageSize: o.PageSize, PageToken: o.PageToken}
		if o.LabelSelector != "" {
			return nil, fmt.Errorf("tasks have no labels; filter them with a field " +
				"selector such as state=Failed,kind=DeviceRender")
		}
		if err := taskFilters(o.FieldSelector, req); err != nil {
			return nil, err
		}
		r, err := c.Tasks.ListTasks(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return &Page{Items: items(r.Msg.GetTasks()), NextPageToken: r.Msg.GetNextPageToken()}, nil
	},
}

// taskFilters copies "state=X,kind=Y" from a field selector into req.
func taskFilters(selector string, req *fleetplanev1.ListTasksRequest) error {
	if strings.TrimSpace(selector) == "" {
		return nil
	}
	for _, term := range strings.Split(selector, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(term), "=")
		switch {
		case ok && strings.TrimSpace(key) == "state":
			req.State = strings.TrimSpace(value)
		case ok && strings.TrimSpace(key) == "kind":
			req.Kind = strings.TrimSpace(value)
		default:
			return fmt.Errorf("invalid task field selector term %q: use state=VALUE or kind=VALUE",
				term)
		}
	}
	return nil
}

var replicaOps = ops{
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		if o.LabelSelector != "" || o.FieldSelector != "" {
			return nil, fmt.Errorf("replicas take no selectors; list them without -l or --field-selector")
		}
		r, err := c.Replicas.ListReplicas(ctx, connect.NewRequest(&fleetplanev1.ListReplicasRequest{}))
		if err != nil {
			return nil, err
		}
		return &Page{Items: items(r.Msg.GetReplicas())}, nil
	},
}

var agentSessionOps = ops{
	list: func(ctx context.Context, c *Client, o ListOptions) (*Page, error) {
		if o.LabelSelector != "" {
			return nil, fmt.Errorf("agent sessions have no labels; filter them with a field " +
				"selector such as replica=r1")
		}
		req := &fleetplanev1.ListAgentSessionsRequest{PageSize: o.PageSize, PageToken: o.PageToken}
		if selector := strings.TrimSpace(o.FieldSelector); selector != "" {
			key, value, ok := strings.Cut(selector, "=")
			if !ok || strings.TrimSpace(key) != "replica" || strings.Contains(value, ",") ||
				strings.TrimSpace(value) == "" {
				return nil, fmt.Errorf("invalid agent session field selector %q: use replica=ID",
					selector)
			}
			req.Replica = strings.TrimSpace(value)
		}
		r, err := c.Replicas.ListAgentSessions(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return &Page{Items: items(r.Msg.GetSessions()), NextPageToken: r.Msg.GetNextPageToken()}, nil
	},
}
