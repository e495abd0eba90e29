package snapshot

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

var (
	errAuth       = errors.New("etcd authentication failed (check the username and password of the auth secret)")
	errPermission = errors.New("etcd permission denied (taking a snapshot needs a user with the root role)")
)

// describeErr makes etcd's terse errors say what to fix; the cause stays wrapped.
func describeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrGRPCAuthFailed):
		return fmt.Errorf("%w: %w", errAuth, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrGRPCPermissionDenied),
		errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrGRPCUserEmpty):
		return fmt.Errorf("%w: %w", errPermission, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer in time: %w", err)
	}
	return err
}

// permanent errors are not worth another member: every member would say the same.
func permanent(err error) bool {
	return errors.Is(err, errAuth) || errors.Is(err, errPermission) || errors.Is(err, ErrTrailerMismatch)
}
