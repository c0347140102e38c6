package sales_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/sales"
)

func TestParseFileConfig(t *testing.T) {
	b, err := os.ReadFile("testdata/sales.json")
	if err != nil {
		t.Fatal(err)
	}
	fc, err := sales.ParseFileConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(fc.Events) != 1 || fc.Events[0].Types[0].Tiers[1].Price != 38000 || time.Duration(fc.HoldFor) != 15*time.Minute ||
		len(fc.RealNameKey) != 32 || fc.WeChat.PlatformPublicKeyID == "" {
		t.Fatalf("parsed %+v", fc)
	}
	t.Setenv("GATESYNC_WECHAT_APIV3_KEY", "from-the-environment-32-bytes-xx")
	fc, _ = sales.ParseFileConfig(b)
	if fc.WeChat.APIv3Key != "from-the-environment-32-bytes-xx" {
		t.Fatal("environment does not override the APIv3 key")
	}
}

func TestConfigErrors(t *testing.T) {
	good, _ := os.ReadFile("testdata/sales.json")
	for _, tc := range []struct{ name, from, to, want string }{
		{"misspelt field", `"max_per_user"`, `"max_per_usr"`, "unknown field"},
		{"bad duration", `"15m"`, `"15 minutes"`, "duration"},
		{"short key", `"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"`, `"0f1e"`, "hex characters"},
		{"no mchid", `"mchid": "1900000109"`, `"mchid": ""`, "mchid are required"},
		{"bad event id", `"gala-2027"`, `"gala 2027"`, "letters, digits"},
		{"ends before doors", `"2027-01-01T23:30:00+08:00"`, `"2027-01-01T17:00:00+08:00"`, "ends after doors_open"},
		{"free ticket", `"price_fen": 38000`, `"price_fen": 0`, "price_fen > 0"},
		{"real name without keys", `"real_name_key": "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f",`, ``, "real_name_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := strings.Replace(string(good), tc.from, tc.to, 1)
			if b == string(good) {
				t.Fatal("test does not change the file")
			}
			_, err := sales.ParseFileConfig([]byte(b))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzParseFileConfig(f *testing.F) {
	good, _ := os.ReadFile("testdata/sales.json")
	f.Add(good)
	f.Add([]byte(`{"appid":"a","mchid":"m","events":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fc, err := sales.ParseFileConfig(b)
		if err != nil {
			return
		}
		if err := fc.Validate(); err != nil {
			t.Fatalf("accepted a config that does not validate: %v", err)
		}
	})
}

// FuzzOrderRequest feeds the order endpoint arbitrary bodies: each gets a
// JSON answer, never a crash, and never oversells.
func FuzzOrderRequest(f *testing.F) {
	// No rate limits: the fuzzer is to reach the decoding and checks.
	h := newHarness(f, func(c *sales.Config) { c.UserRate, c.AddrRate = -1, -1 })
	tok := h.signIn("o-fuzz")
	f.Add([]byte(`{"event":"gala","type":"std","tier":"early","quantity":1}`))
	f.Add([]byte(`{"event":"live","type":"floor","tier":"std","quantity":1,"holders":[{"name":"张三","id_number":"11010519491231002X"}]}`))
	f.Add([]byte(`{"event":"gala","quantity":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a := h.doT(t, "POST", "/api/v1/orders", tok, jsonRaw(b))
		if a.status >= 500 {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if a.status >= 400 && a.errCode() == "" {
			t.Fatalf("refusal without a code: %s", a.body)
		}
	})
}
