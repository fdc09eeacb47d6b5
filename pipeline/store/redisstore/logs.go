package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// go-redis logs through one logger for the whole process, straight to
// stderr unless told otherwise: a line for every failed dial, which floods
// a container run's output while its Redis is down (a fault the harness
// makes on purpose). Route it through log/slog at debug level instead: to
// slog.Default as it stands when each line comes, so a program shows the
// lines only when its default logger takes debug.
func init() { redis.SetLogger(slogLogger{}) }

// slogLogger is go-redis's Logging over slog.Default, at debug level.
type slogLogger struct{}

func (slogLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().Log(ctx, slog.LevelDebug, strings.TrimSpace(fmt.Sprintf(format, v...)), "from", "go-redis")
}
