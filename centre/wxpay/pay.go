package wxpay

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/downloader"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/jsapi"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"
)

// DefaultPayBaseURL is the WeChat Pay API v3 server the SDK is built for.
const DefaultPayBaseURL = "https://api.mch.weixin.qq.com"

const defaultTimeout = 10 * time.Second

// DefaultNotifyWindow is how far a notification's Wechatpay-Timestamp may
// be from our clock; WeChat Pay's documentation and SDK use five minutes.
const DefaultNotifyWindow = 5 * time.Minute

// Trade states of a WeChat Pay order (trade_state).
const (
	TradeSuccess  = "SUCCESS"
	TradeNotPay   = "NOTPAY"
	TradeClosed   = "CLOSED"
	TradeRefund   = "REFUND"
	TradeRevoked  = "REVOKED"
	TradePaying   = "USERPAYING"
	TradePayError = "PAYERROR"
)

// Refund states (status / refund_status).
const (
	RefundSuccess    = "SUCCESS"
	RefundClosed     = "CLOSED"
	RefundProcessing = "PROCESSING"
	RefundAbnormal   = "ABNORMAL"
)

var (
	// ErrBadNotification means a notification failed verification: a
	// missing header, a timestamp out of the window, an unknown serial, a
	// bad signature, or a resource that does not decrypt.
	ErrBadNotification = errors.New("wechat pay notification failed verification")
	// ErrOrderNotExist is WeChat Pay's ORDER_NOT_EXIST: no prepay was made.
	ErrOrderNotExist = errors.New("wechat pay has no such order")
)

// PayConfig configures a Pay client. The platform's key comes from exactly
// one of PlatformCerts, PlatformPublicKey or, when both are empty, the
// SDK's certificate downloader (which calls WeChat Pay when NewPay runs).
type PayConfig struct {
	MchID string // merchant id (mchid)
	AppID string // the mini program's appid, bound to the merchant
	// MchCertSerial is the serial number of the merchant API certificate;
	// MchKey is its private key (apiclient_key.pem).
	MchCertSerial string
	MchKey        *rsa.PrivateKey
	// APIv3Key is the 32-byte key set in the merchant platform; it decrypts
	// notification resources.
	APIv3Key string

	PlatformCerts       []*x509.Certificate
	PlatformPublicKeyID string // "PUB_KEY_ID_..." with PlatformPublicKey
	PlatformPublicKey   *rsa.PublicKey

	// NotifyURL and RefundNotifyURL are the https URLs WeChat Pay posts
	// payment and refund notifications to.
	NotifyURL       string
	RefundNotifyURL string

	// BaseURL replaces scheme and host of DefaultPayBaseURL (tests).
	BaseURL string
	// HTTPClient defaults to a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock for the notification timestamp window.
	Now func() time.Time
	// NotifyWindow defaults to DefaultNotifyWindow.
	NotifyWindow time.Duration
}

// Pay is a WeChat Pay API v3 client for JSAPI (mini program) payments.
// It is safe for concurrent use.
type Pay struct {
	cfg      PayConfig
	client   *core.Client
	jsapi    jsapi.JsapiApiService
	refunds  refunddomestic.RefundsApiService
	notifier *notify.Handler
}

// NewPay checks cfg and builds the SDK client and notification handler.
func NewPay(ctx context.Context, cfg PayConfig) (*Pay, error) {
	switch {
	case cfg.MchID == "" || cfg.AppID == "":
		return nil, errors.New("wechat pay: mchid and appid are required")
	case cfg.MchKey == nil || cfg.MchCertSerial == "":
		return nil, errors.New("wechat pay: the merchant API private key and its certificate serial are required")
	case len(cfg.APIv3Key) != 32:
		return nil, fmt.Errorf("wechat pay: the APIv3 key must be 32 bytes, got %d", len(cfg.APIv3Key))
	case cfg.NotifyURL == "":
		return nil, errors.New("wechat pay: notify URL is required (where WeChat Pay posts payment results)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NotifyWindow <= 0 {
		cfg.NotifyWindow = DefaultNotifyWindow
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: defaultTimeout}
	}
	if cfg.BaseURL != "" && cfg.BaseURL != DefaultPayBaseURL {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("wechat pay: base URL %q: want scheme://host[:port] only", cfg.BaseURL)
		}
		c := *hc
		c.Transport = rewriteHost{scheme: u.Scheme, host: u.Host, next: hc.Transport}
		hc = &c
	}

	var auth core.ClientOption
	var verifier authVerifier
	switch {
	case len(cfg.PlatformCerts) > 0:
		auth = option.WithWechatPayAuthCipher(cfg.MchID, cfg.MchCertSerial, cfg.MchKey, cfg.PlatformCerts)
		verifier = verifiers.NewSHA256WithRSAVerifier(core.NewCertificateMapWithList(cfg.PlatformCerts))
	case cfg.PlatformPublicKey != nil:
		if cfg.PlatformPublicKeyID == "" {
			return nil, errors.New("wechat pay: a platform public key needs its id (PUB_KEY_ID_...)")
		}
		auth = option.WithWechatPayPublicKeyAuthCipher(cfg.MchID, cfg.MchCertSerial, cfg.MchKey, cfg.PlatformPublicKeyID, cfg.PlatformPublicKey)
		verifier = verifiers.NewSHA256WithRSAPubkeyVerifier(cfg.PlatformPublicKeyID, *cfg.PlatformPublicKey)
	default:
		auth = option.WithWechatPayAutoAuthCipher(cfg.MchID, cfg.MchCertSerial, cfg.MchKey, cfg.APIv3Key)
		verifier = verifiers.NewSHA256WithRSAVerifier(downloader.MgrInstance().GetCertificateVisitor(cfg.MchID))
	}
	client, err := core.NewClient(ctx, auth, option.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("wechat pay client: %w", err)
	}
	h, err := notify.NewRSANotifyHandler(cfg.APIv3Key, verifier)
	if err != nil {
		return nil, fmt.Errorf("wechat pay notify handler: %w", err)
	}
	return &Pay{cfg: cfg, client: client, jsapi: jsapi.JsapiApiService{Client: client},
		refunds: refunddomestic.RefundsApiService{Client: client}, notifier: h}, nil
}

type authVerifier = auth.Verifier

// rewriteHost sends requests the SDK addresses to the production server to
// another one; the SDK signs the path and query, not the host, so the
// signatures stay valid.
type rewriteHost struct {
	scheme, host string
	next         http.RoundTripper
}

func (t rewriteHost) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := r.Clone(r.Context())
	r2.URL.Scheme, r2.URL.Host, r2.Host = t.scheme, t.host, t.host
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(r2)
}

// PrepayRequest is one JSAPI order.
type PrepayRequest struct {
	OutTradeNo  string
	Description string
	OpenID      string
	Total       int64 // fen
	// Expire is when WeChat Pay stops accepting payment for the order; set
	// it to the end of the stock hold so a late payment cannot happen.
	Expire time.Time
	Attach string
}

// RequestPayment holds the parameters of wx.requestPayment, named as the
// mini program API names them.
type RequestPayment struct {
	PrepayID  string `json:"prepay_id"`
	AppID     string `json:"appId"`
	TimeStamp string `json:"timeStamp"`
	NonceStr  string `json:"nonceStr"`
	Package   string `json:"package"`
	SignType  string `json:"signType"`
	PaySign   string `json:"paySign"`
}

// Prepay creates the order at WeChat Pay and signs the payment parameters
// for the phone with the merchant key.
func (p *Pay) Prepay(ctx context.Context, r PrepayRequest) (*RequestPayment, error) {
	req := jsapi.PrepayRequest{
		Appid:       core.String(p.cfg.AppID),
		Mchid:       core.String(p.cfg.MchID),
		Description: core.String(r.Description),
		OutTradeNo:  core.String(r.OutTradeNo),
		NotifyUrl:   core.String(p.cfg.NotifyURL),
		Amount:      &jsapi.Amount{Total: core.Int64(r.Total), Currency: core.String("CNY")},
		Payer:       &jsapi.Payer{Openid: core.String(r.OpenID)},
	}
	if !r.Expire.IsZero() {
		req.TimeExpire = core.Time(r.Expire)
	}
	if r.Attach != "" {
		req.Attach = core.String(r.Attach)
	}
	resp, _, err := p.jsapi.PrepayWithRequestPayment(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("wechat pay prepay %s: %w", r.OutTradeNo, err)
	}
	return &RequestPayment{PrepayID: deref(resp.PrepayId), AppID: deref(resp.Appid), TimeStamp: deref(resp.TimeStamp),
		NonceStr: deref(resp.NonceStr), Package: deref(resp.Package), SignType: deref(resp.SignType), PaySign: deref(resp.PaySign)}, nil
}

// Transaction is the part of a WeChat Pay order the sales side checks.
type Transaction struct {
	AppID         string `json:"appid"`
	MchID         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	TradeState    string `json:"trade_state"`
	Total         int64  `json:"total"`
	PayerOpenID   string `json:"payer_openid"`
	SuccessTime   string `json:"success_time,omitempty"`
}

// QueryOrder asks WeChat Pay for the state of an order. An order never
// prepaid gives ErrOrderNotExist.
func (p *Pay) QueryOrder(ctx context.Context, outTradeNo string) (*Transaction, error) {
	tx, _, err := p.jsapi.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{
		OutTradeNo: core.String(outTradeNo), Mchid: core.String(p.cfg.MchID)})
	var ae *core.APIError
	if errors.As(err, &ae) && ae.Code == "ORDER_NOT_EXIST" {
		return nil, ErrOrderNotExist
	}
	if err != nil {
		return nil, fmt.Errorf("wechat pay query %s: %w", outTradeNo, err)
	}
	t := &Transaction{AppID: deref(tx.Appid), MchID: deref(tx.Mchid), OutTradeNo: deref(tx.OutTradeNo),
		TransactionID: deref(tx.TransactionId), TradeState: deref(tx.TradeState), SuccessTime: deref(tx.SuccessTime)}
	if tx.Amount != nil && tx.Amount.Total != nil {
		t.Total = *tx.Amount.Total
	}
	if tx.Payer != nil {
		t.PayerOpenID = deref(tx.Payer.Openid)
	}
	return t, nil
}

// CloseOrder closes an unpaid order so it can no longer be paid.
func (p *Pay) CloseOrder(ctx context.Context, outTradeNo string) error {
	_, err := p.jsapi.CloseOrder(ctx, jsapi.CloseOrderRequest{OutTradeNo: core.String(outTradeNo), Mchid: core.String(p.cfg.MchID)})
	if err != nil {
		return fmt.Errorf("wechat pay close %s: %w", outTradeNo, err)
	}
	return nil
}

// RefundRequest refunds part or all of a paid order.
type RefundRequest struct {
	OutTradeNo  string
	OutRefundNo string // deterministic, so a retry is the same refund
	Reason      string
	Refund      int64 // fen
	Total       int64 // fen, the order's total
}

// Refund is WeChat Pay's answer to a refund request.
type Refund struct {
	OutRefundNo string `json:"out_refund_no"`
	RefundID    string `json:"refund_id"`
	Status      string `json:"status"`
}

// Refund asks WeChat Pay to refund. The same OutRefundNo twice is one
// refund at WeChat Pay, so a retry after a lost answer is safe.
func (p *Pay) Refund(ctx context.Context, r RefundRequest) (*Refund, error) {
	req := refunddomestic.CreateRequest{
		OutTradeNo:  core.String(r.OutTradeNo),
		OutRefundNo: core.String(r.OutRefundNo),
		Amount:      &refunddomestic.AmountReq{Refund: core.Int64(r.Refund), Total: core.Int64(r.Total), Currency: core.String("CNY")},
	}
	if r.Reason != "" {
		req.Reason = core.String(r.Reason)
	}
	if p.cfg.RefundNotifyURL != "" {
		req.NotifyUrl = core.String(p.cfg.RefundNotifyURL)
	}
	resp, _, err := p.refunds.Create(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("wechat pay refund %s: %w", r.OutRefundNo, err)
	}
	out := &Refund{OutRefundNo: deref(resp.OutRefundNo), RefundID: deref(resp.RefundId)}
	if resp.Status != nil {
		out.Status = string(*resp.Status)
	}
	return out, nil
}

// ParsePaymentNotify verifies a payment notification (timestamp window,
// then the SDK: platform signature by serial, AES-256-GCM resource under
// the APIv3 key) and returns the transaction it carries. It does not check
// mchid, appid or amount: the caller knows the order.
func (p *Pay) ParsePaymentNotify(r *http.Request) (*Transaction, error) {
	var tx struct {
		Transaction
		Amount struct {
			Total int64 `json:"total"`
		} `json:"amount"`
		Payer struct {
			OpenID string `json:"openid"`
		} `json:"payer"`
	}
	if err := p.parseNotify(r, &tx); err != nil {
		return nil, err
	}
	t := tx.Transaction
	t.Total, t.PayerOpenID = tx.Amount.Total, tx.Payer.OpenID
	if t.OutTradeNo == "" {
		return nil, fmt.Errorf("%w: resource without out_trade_no", ErrBadNotification)
	}
	return &t, nil
}

// RefundNotice is the resource of a refund notification.
type RefundNotice struct {
	MchID         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	OutRefundNo   string `json:"out_refund_no"`
	RefundID      string `json:"refund_id"`
	RefundStatus  string `json:"refund_status"`
	Amount        struct {
		Total  int64 `json:"total"`
		Refund int64 `json:"refund"`
	} `json:"amount"`
}

// ParseRefundNotify verifies a refund notification like ParsePaymentNotify.
func (p *Pay) ParseRefundNotify(r *http.Request) (*RefundNotice, error) {
	var n RefundNotice
	if err := p.parseNotify(r, &n); err != nil {
		return nil, err
	}
	if n.OutRefundNo == "" {
		return nil, fmt.Errorf("%w: resource without out_refund_no", ErrBadNotification)
	}
	return &n, nil
}

func (p *Pay) parseNotify(r *http.Request, v any) error {
	// The SDK checks the timestamp against the wall clock; we check it
	// against ours too, first, so the window is configured and testable.
	ts, err := strconv.ParseInt(r.Header.Get("Wechatpay-Timestamp"), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: missing or bad Wechatpay-Timestamp", ErrBadNotification)
	}
	if d := p.cfg.Now().Sub(time.Unix(ts, 0)); d > p.cfg.NotifyWindow || d < -p.cfg.NotifyWindow {
		return fmt.Errorf("%w: Wechatpay-Timestamp %d is %s from our clock (window %s)", ErrBadNotification, ts, d.Round(time.Second), p.cfg.NotifyWindow)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("%w: read body: %v", ErrBadNotification, err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	// wechatpay-go v0.2.21 hands the resource nonce to cipher.AEAD.Open
	// unchecked, which panics on a nonce that is not 12 bytes.
	var env struct {
		Resource struct {
			Nonce string `json:"nonce"`
		} `json:"resource"`
	}
	if json.Unmarshal(body, &env) != nil || len(env.Resource.Nonce) != gcmNonceSize {
		return fmt.Errorf("%w: resource nonce missing or not %d bytes", ErrBadNotification, gcmNonceSize)
	}
	if err := p.sdkParse(r, v); err != nil {
		// The SDK's message quotes the whole request; keep ours short.
		return fmt.Errorf("%w: %s", ErrBadNotification, firstLine(err.Error(), 300))
	}
	return nil
}

const gcmNonceSize = 12

// sdkParse runs the SDK's verification and decryption; a panic inside it
// is a refused notification, not a dead server.
func (p *Pay) sdkParse(r *http.Request, v any) (err error) {
	defer func() {
		if x := recover(); x != nil {
			err = fmt.Errorf("wechatpay-go panicked: %v", x)
		}
	}()
	_, err = p.notifier.ParseNotifyRequest(r.Context(), r, v)
	return err
}

func firstLine(s string, max int) string {
	s, _, _ = strings.Cut(s, ", request:")
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > max {
		s = s[:max]
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
