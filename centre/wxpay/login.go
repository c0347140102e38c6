// Package wxpay talks to WeChat for the sales back end: the mini program
// login (jscode2session) and WeChat Pay API v3 (JSAPI prepay, order query,
// refunds, and signed, encrypted notifications), the latter through
// github.com/wechatpay-apiv3/wechatpay-go so signing, verification and
// decryption are the vendor's code, not ours.
//
// Every client takes its base URL and *http.Client from its config, so
// tests run it against the fakes in wxpay/wxpaytest on loopback.
package wxpay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DefaultLoginBaseURL is the WeChat API server that answers jscode2session.
const DefaultLoginBaseURL = "https://api.weixin.qq.com"

// Login errors WeChat documents for jscode2session; callers branch on them
// to tell the buyer what to do.
var (
	// ErrInvalidCode is errcode 40029: the code is wrong, used or expired
	// (a code lives five minutes and works once).
	ErrInvalidCode = errors.New("wechat login code is invalid or used")
	// ErrRateLimited is errcode 45011: too many logins for this user.
	ErrRateLimited = errors.New("wechat login rate limit reached")
	// ErrHighRisk is errcode 40226: WeChat blocks this user as high risk.
	ErrHighRisk = errors.New("wechat refuses a high-risk user")
)

// APIError is any other errcode WeChat answered.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string { return fmt.Sprintf("wechat errcode %d: %s", e.Code, e.Msg) }

// Session is a successful jscode2session answer.
type Session struct {
	OpenID     string `json:"openid"`
	SessionKey string `json:"session_key"`
	UnionID    string `json:"unionid,omitempty"`
}

// LoginConfig configures a LoginClient.
type LoginConfig struct {
	AppID  string
	Secret string
	// BaseURL defaults to DefaultLoginBaseURL.
	BaseURL string
	// HTTPClient defaults to a client with a 10 s timeout.
	HTTPClient *http.Client
}

// LoginClient exchanges mini program login codes for openids. It is safe
// for concurrent use.
type LoginClient struct {
	cfg LoginConfig
}

// NewLoginClient returns a client; AppID and Secret are required.
func NewLoginClient(cfg LoginConfig) (*LoginClient, error) {
	if cfg.AppID == "" || cfg.Secret == "" {
		return nil, errors.New("wechat login: appid and secret are required (mini program settings, Development > Development settings)")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultLoginBaseURL
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: defaultTimeout}
	}
	return &LoginClient{cfg: cfg}, nil
}

// Code2Session exchanges the code wx.login gave the phone.
func (c *LoginClient) Code2Session(ctx context.Context, code string) (Session, error) {
	if code == "" {
		return Session{}, ErrInvalidCode
	}
	q := url.Values{
		"appid":      {c.cfg.AppID},
		"secret":     {c.cfg.Secret},
		"js_code":    {code},
		"grant_type": {"authorization_code"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.BaseURL+"/sns/jscode2session?"+q.Encode(), nil)
	if err != nil {
		return Session{}, err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		// A *url.Error quotes the URL, and the URL carries the app secret:
		// keep it out of logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Session{}, fmt.Errorf("jscode2session %s: %w", c.cfg.BaseURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Session{}, fmt.Errorf("jscode2session: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Session{}, fmt.Errorf("jscode2session: HTTP %d", resp.StatusCode)
	}
	return ParseSession(body)
}

// ParseSession decodes a jscode2session answer. WeChat answers errors with
// HTTP 200 and an errcode, so the errcode decides, not the status.
func ParseSession(body []byte) (Session, error) {
	var r struct {
		Session
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return Session{}, fmt.Errorf("jscode2session: bad answer: %w", err)
	}
	switch r.ErrCode {
	case 0:
	case 40029:
		return Session{}, ErrInvalidCode
	case 45011:
		return Session{}, ErrRateLimited
	case 40226:
		return Session{}, ErrHighRisk
	default:
		return Session{}, &APIError{Code: r.ErrCode, Msg: r.ErrMsg}
	}
	if r.OpenID == "" {
		return Session{}, errors.New("jscode2session: answer without openid")
	}
	return r.Session, nil
}
