package modelio

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// TimestepLimit is the model's last training timestep (num_train_timesteps)
// and where it was found: config.json, else a diffusers pipeline's
// ../scheduler/scheduler_config.json. 0 and "" when unknown.
func (m *Model) TimestepLimit() (float64, string) {
	if n, from := TimestepLimitFromConfig(m.Config); n > 0 {
		return n, from
	}
	if m.remote || m.Dir == "" {
		return 0, ""
	}
	path := filepath.Join(filepath.Dir(m.Dir), "scheduler", "scheduler_config.json")
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) > MaxJSONBytes {
		return 0, ""
	}
	var cfg map[string]any
	if json.Unmarshal(raw, &cfg) != nil {
		return 0, ""
	}
	if n, _ := TimestepLimitFromConfig(cfg); n > 0 {
		return n, fmt.Sprintf("num_train_timesteps %v in ../scheduler/scheduler_config.json", n)
	}
	return 0, ""
}

// TimestepLimitFromConfig reads num_train_timesteps from a parsed
// config.json (0 and "" when absent or not a positive finite number).
func TimestepLimitFromConfig(cfg map[string]any) (float64, string) {
	n, ok := cfg["num_train_timesteps"].(float64)
	if !ok || !(n > 0) || math.IsInf(n, 0) {
		return 0, ""
	}
	return n, fmt.Sprintf("num_train_timesteps %v in config.json", n)
}
