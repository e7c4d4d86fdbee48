package sqlite

import (
	"context"
	"fmt"
)

// settingPrefix keeps settings apart from the store's own rows in the meta table.
const settingPrefix = "setting."

// InitSetting stores value under key unless key already has a value, and returns the stored
// value.
func (t *tx) InitSetting(ctx context.Context, key, value string) (string, error) {
	_, err := t.exec(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO NOTHING`, settingPrefix+key, value)
	if err != nil {
		return "", fmt.Errorf("init setting %s: %w", key, err)
	}
	var stored string
	if err := t.queryRow(ctx, `SELECT value FROM meta WHERE key = ?`, settingPrefix+key).Scan(&stored); err != nil {
		return "", fmt.Errorf("read setting %s: %w", key, err)
	}
	return stored, nil
}
