package server

import (
	"context"
	"fmt"
	"sort"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// taskService serves TaskService.
type taskService struct{ s *Server }

func (h *taskService) ListTasks(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListTasksRequest],
) (*connect.Response[fleetplanev1.ListTasksResponse], error) {
	state := store.TaskState(req.Msg.GetState())
	switch state {
	case "", store.TaskPending, store.TaskRunning, store.TaskFailed:
	default:
		return nil, invalidArgument("state", fmt.Sprintf(
			"%q is not a task state; use Pending, Running or Failed, or leave it empty", state))
	}
	if req.Msg.GetPageSize() < 0 {
		return nil, invalidArgument("pageSize", fmt.Sprintf(
			"%d is negative; use 0 for the default of %d", req.Msg.GetPageSize(),
			store.DefaultPageSize))
	}
	var tasks []store.Task
	var next string
	err := h.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		tasks, next, err = tx.ListTasks(ctx, store.TaskFilter{
			Kind:      req.Msg.GetKind(),
			State:     state,
			Limit:     int(req.Msg.GetPageSize()),
			PageToken: req.Msg.GetPageToken(),
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &fleetplanev1.ListTasksResponse{NextPageToken: next}
	for _, t := range tasks {
		resp.Tasks = append(resp.Tasks, &fleetplanev1.Task{
			Kind:        t.Kind,
			Key:         t.Key,
			Shard:       int32(t.Shard),
			State:       string(t.State),
			Attempts:    int32(t.Attempts),
			LastError:   t.LastError,
			NextRunTime: timestamppb.New(t.RunAt),
			CreatedTime: timestamppb.New(t.CreatedAt),
			Rerun:       t.Rerun,
		})
	}
	return connect.NewResponse(resp), nil
}

// replicaService serves ReplicaService.
type replicaService struct{ s *Server }

func (h *replicaService) ListReplicas(
	ctx context.Context,
	_ *connect.Request[fleetplanev1.ListReplicasRequest],
) (*connect.Response[fleetplanev1.ListReplicasResponse], error) {
	var replicas []store.Replica
	var leases []store.Lease
	var shards int
	err := h.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		if replicas, err = tx.Replicas(ctx); err != nil {
			return err
		}
		if leases, err = tx.Leases(ctx); err != nil {
			return err
		}
		shards, err = tx.ShardCount(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	byOwner := map[string][]*fleetplanev1.ShardLease{}
	for _, l := range leases {
		byOwner[l.Owner] = append(byOwner[l.Owner], &fleetplanev1.ShardLease{
			Shard: int32(l.Shard), Epoch: l.Epoch, ExpireTime: timestamppb.New(l.ExpiresAt)})
	}
	resp := &fleetplanev1.ListReplicasResponse{ShardCount: int32(shards)}
	for _, r := range replicas {
		owned := byOwner[r.ID]
		sort.Slice(owned, func(i, j int) bool { return owned[i].Shard < owned[j].Shard })
		resp.Replicas = append(resp.Replicas, &fleetplanev1.Replica{
			Id:              r.ID,
			Address:         r.Address,
			HeartbeatTime:   timestamppb.New(r.HeartbeatAt),
			StartedTime:     timestamppb.New(r.StartedAt),
			Leases:          owned,
			ConnectedAgents: r.ConnectedAgents,
		})
	}
	return connect.NewResponse(resp), nil
}

// ListAgentSessions serves ReplicaService.ListAgentSessions from the session registry.
func (h *replicaService) ListAgentSessions(
	ctx context.Context,
	req *connect.Request[fleetplanev1.ListAgentSessionsRequest],
) (*connect.Response[fleetplanev1.ListAgentSessionsResponse], error) {
	if req.Msg.GetPageSize() < 0 {
		return nil, invalidArgument("pageSize", fmt.Sprintf(
			"%d is negative; use 0 for the default of %d", req.Msg.GetPageSize(),
			store.DefaultPageSize))
	}
	var sessions []store.Session
	var next string
	err := h.s.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		sessions, next, err = tx.ListSessions(ctx, store.SessionFilter{
			Replica:   req.Msg.GetReplica(),
			Limit:     int(req.Msg.GetPageSize()),
			PageToken: req.Msg.GetPageToken(),
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &fleetplanev1.ListAgentSessionsResponse{NextPageToken: next}
	for _, s := range sessions {
		resp.Sessions = append(resp.Sessions, &fleetplanev1.AgentSession{
			Device: s.Device, Replica: s.Replica, OpenTime: timestamppb.New(s.OpenedAt)})
	}
	return connect.NewResponse(resp), nil
}
