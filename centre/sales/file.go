package sales

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/kv/pgkv"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// FileConfig is the sales configuration file (JSON) that
// `gatesync serve --sales-config FILE` reads: the Config fields at the top
// level, plus where the store lives and the WeChat credentials.
type FileConfig struct {
	Config
	// Store is where the sales books are: a bbolt file, relative paths
	// taken from the directory passed to Open (default "sales.db"), or a
	// postgres:// URL, which keeps them in PostgreSQL in the table
	// gatesync_sales (see docs/scaleout.md). The environment variable
	// GATESYNC_SALES_STORE, when set, wins, to keep a password out of the
	// file.
	Store  string       `json:"store"`
	WeChat WeChatConfig `json:"wechat"`
}

// WeChatConfig holds the WeChat credentials. The two secrets may instead
// come from the environment (GATESYNC_WECHAT_APP_SECRET,
// GATESYNC_WECHAT_APIV3_KEY), which wins when set.
type WeChatConfig struct {
	AppSecret     string `json:"app_secret"`
	MchCertSerial string `json:"mch_cert_serial"`
	MchKeyFile    string `json:"mch_key_file"` // apiclient_key.pem
	APIv3Key      string `json:"apiv3_key"`
	// Exactly one way to know the platform's key: certificate files,
	// a public key file with its id, or neither (download at start).
	PlatformCertFiles     []string `json:"platform_cert_files,omitempty"`
	PlatformPublicKeyFile string   `json:"platform_public_key_file,omitempty"`
	PlatformPublicKeyID   string   `json:"platform_public_key_id,omitempty"`
	// NotifyURL and RefundNotifyURL are this server's public https URLs of
	// /api/v1/wxpay/notify and /api/v1/wxpay/refund-notify.
	NotifyURL       string `json:"notify_url"`
	RefundNotifyURL string `json:"refund_notify_url"`
	// PayBaseURL and LoginBaseURL replace WeChat's servers (for tests).
	PayBaseURL   string `json:"pay_base_url,omitempty"`
	LoginBaseURL string `json:"login_base_url,omitempty"`
}

// ParseFileConfig reads a configuration file's bytes. Unknown fields are
// errors, so a misspelt limit does not silently fall back to its default.
func ParseFileConfig(b []byte) (*FileConfig, error) {
	var fc FileConfig
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&fc); err != nil {
		return nil, fmt.Errorf("sales config: %w", err)
	}
	if s := os.Getenv("GATESYNC_WECHAT_APP_SECRET"); s != "" {
		fc.WeChat.AppSecret = s
	}
	if s := os.Getenv("GATESYNC_WECHAT_APIV3_KEY"); s != "" {
		fc.WeChat.APIv3Key = s
	}
	if err := fc.Config.Validate(); err != nil {
		return nil, fmt.Errorf("sales config: %w", err)
	}
	return &fc, nil
}

// LoadFileConfig reads and checks a configuration file.
func LoadFileConfig(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fc, err := ParseFileConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fc, nil
}

// Open builds a running configuration: the store under dir, the WeChat
// clients, and the server. close releases the store.
func Open(ctx context.Context, fc *FileConfig, dir string, iss Issuer, log *slog.Logger) (s *Server, close func() error, err error) {
	w := fc.WeChat
	key, err := utils.LoadPrivateKeyWithPath(w.MchKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("wechat mch_key_file: %w", err)
	}
	pc := wxpay.PayConfig{MchID: fc.MchID, AppID: fc.AppID, MchCertSerial: w.MchCertSerial, MchKey: key,
		APIv3Key: w.APIv3Key, NotifyURL: w.NotifyURL, RefundNotifyURL: w.RefundNotifyURL, BaseURL: w.PayBaseURL}
	for _, f := range w.PlatformCertFiles {
		c, err := utils.LoadCertificateWithPath(f)
		if err != nil {
			return nil, nil, fmt.Errorf("wechat platform_cert_files: %w", err)
		}
		pc.PlatformCerts = append(pc.PlatformCerts, c)
	}
	if w.PlatformPublicKeyFile != "" {
		var pub *rsa.PublicKey
		if pub, err = utils.LoadPublicKeyWithPath(w.PlatformPublicKeyFile); err != nil {
			return nil, nil, fmt.Errorf("wechat platform_public_key_file: %w", err)
		}
		pc.PlatformPublicKey, pc.PlatformPublicKeyID = pub, w.PlatformPublicKeyID
	}
	pay, err := wxpay.NewPay(ctx, pc)
	if err != nil {
		return nil, nil, err
	}
	login, err := wxpay.NewLoginClient(wxpay.LoginConfig{AppID: fc.AppID, Secret: w.AppSecret, BaseURL: w.LoginBaseURL})
	if err != nil {
		return nil, nil, err
	}
	st, err := openStore(ctx, fc.Store, dir)
	if err != nil {
		return nil, nil, err
	}
	s, err = NewServer(fc.Config, st, iss, pay, login, log)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return s, st.Close, nil
}

// IsPostgres reports whether a store setting names a PostgreSQL database.
func IsPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

// PostgresTable is the table the sales books take in PostgreSQL.
const PostgresTable = "gatesync_sales"

// openStore opens the sales books a store setting names (FileConfig.Store).
func openStore(ctx context.Context, store, dir string) (*Store, error) {
	if env := os.Getenv("GATESYNC_SALES_STORE"); env != "" {
		store = env
	}
	if IsPostgres(store) {
		db, err := pgkv.Open(ctx, store, pgkv.Options{Table: PostgresTable})
		if err != nil {
			return nil, fmt.Errorf("sales store: %w", err)
		}
		return NewStore(db), nil
	}
	path := store
	if path == "" {
		path = "sales.db"
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	return OpenStore(path)
}
