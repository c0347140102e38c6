// Package wxpaytest has fakes of the WeChat servers for tests: the WeChat
// Pay API v3 (JSAPI prepay, query, close, refunds; responses signed with a
// platform key under a self-signed certificate; notifications signed and
// AES-256-GCM encrypted as WeChat Pay sends them) and jscode2session. They
// check what the real servers check: the merchant's request signature, the
// appid/mchid binding, amounts, one-use login codes.
package wxpaytest

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/wxpay"
)

// Keys are the secrets of one merchant and one platform.
type Keys struct {
	MchID, AppID   string
	MchKey         *rsa.PrivateKey
	MchSerial      string
	APIv3Key       string
	PlatformKey    *rsa.PrivateKey
	PlatformCert   *x509.Certificate
	PlatformSerial string
}

var (
	keysOnce sync.Once
	keys     Keys
)

// NewKeys returns a merchant key and a platform key with a self-signed
// certificate. RSA generation is slow, so one set is shared by a test
// binary; the keys are made at run time, never stored.
func NewKeys(t testing.TB) Keys {
	t.Helper()
	keysOnce.Do(func() {
		mk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		pk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "Tenpay.com Root CA (fake)"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &pk.PublicKey, pk)
		if err != nil {
			panic(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		keys = Keys{MchID: "1900000109", AppID: "wxd678efh567hg6787", MchKey: mk, MchSerial: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
			APIv3Key: "0123456789abcdef0123456789ABCDEF", PlatformKey: pk, PlatformCert: cert,
			PlatformSerial: fmt.Sprintf("%X", cert.SerialNumber.Bytes())}
	})
	return keys
}

// Order is the fake's record of a JSAPI order.
type Order struct {
	OutTradeNo    string
	TransactionID string
	AppID, MchID  string
	OpenID        string
	Total         int64
	State         string
	Expire        time.Time
	Refunded      int64
}

// RefundRecord is the fake's record of a refund.
type RefundRecord struct {
	OutRefundNo, OutTradeNo, RefundID, Status string
	Refund, Total                             int64
	Calls                                     int // Create calls with this out_refund_no
}

// PayServer is a fake WeChat Pay API v3 server.
type PayServer struct {
	*httptest.Server
	Keys

	mu      sync.Mutex
	orders  map[string]*Order
	refunds map[string]*RefundRecord
	seq     int
	// Fail, when set, may answer a request with an error instead: return
	// the HTTP status and WeChat Pay error code, or 0 to go on.
	Fail func(r *http.Request) (status int, code string)
}

// NewPayServer starts a fake WeChat Pay server, closed when t ends.
func NewPayServer(t testing.TB) *PayServer {
	s := &PayServer{Keys: NewKeys(t), orders: map[string]*Order{}, refunds: map[string]*RefundRecord{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v3/pay/transactions/jsapi", s.prepay)
	mux.HandleFunc("GET /v3/pay/transactions/out-trade-no/{no}", s.query)
	mux.HandleFunc("POST /v3/pay/transactions/out-trade-no/{no}/close", s.close)
	mux.HandleFunc("POST /v3/refund/domestic/refunds", s.refund)
	s.Server = httptest.NewServer(s.checked(mux))
	t.Cleanup(s.Close)
	return s
}

// Config returns a wxpay.PayConfig pointed at the fake, trusting its
// platform certificate.
func (s *PayServer) Config(notifyURL, refundNotifyURL string) wxpay.PayConfig {
	return wxpay.PayConfig{MchID: s.MchID, AppID: s.AppID, MchCertSerial: s.MchSerial, MchKey: s.MchKey,
		APIv3Key: s.APIv3Key, PlatformCerts: []*x509.Certificate{s.PlatformCert},
		NotifyURL: notifyURL, RefundNotifyURL: refundNotifyURL, BaseURL: s.URL}
}

var authRe = regexp.MustCompile(`(\w+)="([^"]*)"`)

// checked verifies the merchant's Authorization header as WeChat Pay does.
func (s *PayServer) checked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		scheme, params, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || scheme != "WECHATPAY2-SHA256-RSA2048" {
			s.fail(w, 401, "SIGN_ERROR", "Authorization scheme missing")
			return
		}
		p := map[string]string{}
		for _, m := range authRe.FindAllStringSubmatch(params, -1) {
			p[m[1]] = m[2]
		}
		msg := fmt.Sprintf("%s\n%s\n%s\n%s\n%s\n", r.Method, r.URL.RequestURI(), p["timestamp"], p["nonce_str"], body)
		sig, _ := base64.StdEncoding.DecodeString(p["signature"])
		h := sha256.Sum256([]byte(msg))
		if p["mchid"] != s.MchID || p["serial_no"] != s.MchSerial || rsa.VerifyPKCS1v15(&s.MchKey.PublicKey, crypto.SHA256, h[:], sig) != nil {
			s.fail(w, 401, "SIGN_ERROR", "签名错误")
			return
		}
		if s.Fail != nil {
			if st, code := s.Fail(r); st != 0 {
				s.fail(w, st, code, "injected failure")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *PayServer) fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"code": code, "message": msg})
}

// reply signs the body with the platform key, as WeChat Pay signs answers.
func (s *PayServer) reply(w http.ResponseWriter, status int, v any) {
	var body []byte
	if v != nil {
		body, _ = json.Marshal(v)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	nonce := randHex(16)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-ID", randHex(8))
	w.Header().Set("Wechatpay-Timestamp", ts)
	w.Header().Set("Wechatpay-Nonce", nonce)
	w.Header().Set("Wechatpay-Serial", s.PlatformSerial)
	w.Header().Set("Wechatpay-Signature", sign(s.PlatformKey, ts+"\n"+nonce+"\n"+string(body)+"\n"))
	w.WriteHeader(status)
	w.Write(body)
}

func (s *PayServer) prepay(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AppID       string `json:"appid"`
		MchID       string `json:"mchid"`
		Description string `json:"description"`
		OutTradeNo  string `json:"out_trade_no"`
		TimeExpire  string `json:"time_expire"`
		NotifyURL   string `json:"notify_url"`
		Amount      struct {
			Total int64 `json:"total"`
		} `json:"amount"`
		Payer struct {
			OpenID string `json:"openid"`
		} `json:"payer"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		s.fail(w, 400, "PARAM_ERROR", err.Error())
		return
	}
	switch {
	case req.AppID != s.AppID || req.MchID != s.MchID:
		s.fail(w, 400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
		return
	case req.Amount.Total <= 0 || req.OutTradeNo == "" || req.Payer.OpenID == "" || req.NotifyURL == "":
		s.fail(w, 400, "PARAM_ERROR", "参数错误")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.orders[req.OutTradeNo]; ok {
		if o.Total != req.Amount.Total || o.State != wxpay.TradeNotPay {
			s.fail(w, 400, "ORDER_CLOSED_OR_PAID", "订单已支付或关闭")
			return
		}
	} else {
		o := &Order{OutTradeNo: req.OutTradeNo, AppID: req.AppID, MchID: req.MchID, OpenID: req.Payer.OpenID,
			Total: req.Amount.Total, State: wxpay.TradeNotPay}
		if t, err := time.Parse(time.RFC3339, req.TimeExpire); err == nil {
			o.Expire = t
		}
		s.orders[req.OutTradeNo] = o
	}
	s.reply(w, 200, map[string]string{"prepay_id": "wx" + randHex(14)})
}

func (s *PayServer) query(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("mchid") != s.MchID {
		s.fail(w, 400, "PARAM_ERROR", "mchid missing")
		return
	}
	s.mu.Lock()
	o, ok := s.orders[r.PathValue("no")]
	var v map[string]any
	if ok {
		v = s.transaction(o)
	}
	s.mu.Unlock()
	if !ok {
		s.fail(w, 404, "ORDER_NOT_EXIST", "订单不存在")
		return
	}
	s.reply(w, 200, v)
}

func (s *PayServer) close(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	o, ok := s.orders[r.PathValue("no")]
	if ok && o.State == wxpay.TradeNotPay {
		o.State = wxpay.TradeClosed
	}
	s.mu.Unlock()
	if !ok {
		s.fail(w, 404, "ORDER_NOT_EXIST", "订单不存在")
		return
	}
	s.reply(w, 204, nil)
}

func (s *PayServer) refund(w http.ResponseWriter, r *http.Request) {
	var req struct {
		OutTradeNo  string `json:"out_trade_no"`
		OutRefundNo string `json:"out_refund_no"`
		Amount      struct {
			Refund int64 `json:"refund"`
			Total  int64 `json:"total"`
		} `json:"amount"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		s.fail(w, 400, "PARAM_ERROR", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[req.OutTradeNo]
	if !ok {
		s.fail(w, 404, "RESOURCE_NOT_EXISTS", "订单不存在")
		return
	}
	rf, dup := s.refunds[req.OutRefundNo]
	if !dup {
		switch {
		case o.State != wxpay.TradeSuccess && o.State != wxpay.TradeRefund:
			s.fail(w, 403, "INVALID_REQUEST", "订单未支付")
			return
		case req.Amount.Total != o.Total:
			s.fail(w, 400, "PARAM_ERROR", "订单金额不一致")
			return
		case req.Amount.Refund <= 0 || o.Refunded+req.Amount.Refund > o.Total:
			s.fail(w, 403, "NOT_ENOUGH", "退款金额超过可退金额")
			return
		}
		s.seq++
		rf = &RefundRecord{OutRefundNo: req.OutRefundNo, OutTradeNo: o.OutTradeNo, RefundID: fmt.Sprintf("50000%011d", s.seq),
			Status: wxpay.RefundProcessing, Refund: req.Amount.Refund, Total: o.Total}
		s.refunds[req.OutRefundNo] = rf
		o.Refunded += req.Amount.Refund
		o.State = wxpay.TradeRefund
	}
	rf.Calls++
	now := time.Now().Format(time.RFC3339)
	s.reply(w, 200, map[string]any{"refund_id": rf.RefundID, "out_refund_no": rf.OutRefundNo, "transaction_id": o.TransactionID,
		"out_trade_no": o.OutTradeNo, "channel": "ORIGINAL", "user_received_account": "支付用户零钱", "create_time": now,
		"status": rf.Status, "amount": map[string]any{"total": rf.Total, "refund": rf.Refund, "payer_total": rf.Total,
			"payer_refund": rf.Refund, "settlement_refund": rf.Refund, "settlement_total": rf.Total, "discount_refund": 0, "currency": "CNY"}})
}

func (s *PayServer) transaction(o *Order) map[string]any {
	v := map[string]any{"appid": o.AppID, "mchid": o.MchID, "out_trade_no": o.OutTradeNo, "trade_type": "JSAPI",
		"trade_state": o.State, "trade_state_desc": o.State, "payer": map[string]string{"openid": o.OpenID},
		"amount": map[string]any{"total": o.Total, "payer_total": o.Total, "currency": "CNY", "payer_currency": "CNY"}}
	if o.TransactionID != "" {
		v["transaction_id"] = o.TransactionID
		v["bank_type"] = "OTHERS"
		v["success_time"] = time.Now().Format(time.RFC3339)
	}
	return v
}

// Order returns a copy of the fake's record of an order.
func (s *PayServer) Order(outTradeNo string) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[outTradeNo]
	if !ok {
		return Order{}, false
	}
	return *o, true
}

// Refund returns a copy of the fake's record of a refund.
func (s *PayServer) Refund(outRefundNo string) (RefundRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refunds[outRefundNo]
	if !ok {
		return RefundRecord{}, false
	}
	return *r, true
}

// Pay plays the buyer paying a prepaid order and returns the transaction
// resource WeChat Pay would notify.
func (s *PayServer) Pay(outTradeNo string) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[outTradeNo]
	if !ok {
		return nil, fmt.Errorf("fake wechat pay: no order %s", outTradeNo)
	}
	if o.State == wxpay.TradeNotPay {
		s.seq++
		o.State, o.TransactionID = wxpay.TradeSuccess, fmt.Sprintf("42000%023d", s.seq)
	}
	return s.transaction(o), nil
}

// CompleteRefund marks a refund successful and returns the resource of its
// notification.
func (s *PayServer) CompleteRefund(outRefundNo string) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refunds[outRefundNo]
	if !ok {
		return nil, fmt.Errorf("fake wechat pay: no refund %s", outRefundNo)
	}
	r.Status = wxpay.RefundSuccess
	return map[string]any{"mchid": s.MchID, "out_trade_no": r.OutTradeNo, "transaction_id": s.orders[r.OutTradeNo].TransactionID,
		"out_refund_no": r.OutRefundNo, "refund_id": r.RefundID, "refund_status": r.Status, "success_time": time.Now().Format(time.RFC3339),
		"user_received_account": "支付用户零钱", "amount": map[string]any{"total": r.Total, "refund": r.Refund,
			"payer_total": r.Total, "payer_refund": r.Refund}}, nil
}

// Notification is a notification WeChat Pay would post, before sending.
type Notification struct {
	Body   []byte
	Header http.Header
}

// Notify builds a signed notification whose resource is the AES-256-GCM
// encryption of resource under the APIv3 key, stamped at ts.
// eventType is TRANSACTION.SUCCESS or REFUND.SUCCESS (and the like).
func (s *PayServer) Notify(eventType string, resource any, ts time.Time) Notification {
	plain, _ := json.Marshal(resource)
	original := "transaction"
	if strings.HasPrefix(eventType, "REFUND") {
		original = "refund"
	}
	nonce := randHex(6) // 12 characters: GCM's standard nonce size
	block, _ := aes.NewCipher([]byte(s.APIv3Key))
	gcm, _ := cipher.NewGCM(block)
	ct := gcm.Seal(nil, []byte(nonce), plain, []byte(original))
	body, _ := json.Marshal(map[string]any{"id": "EV-" + randHex(8), "create_time": ts.Format(time.RFC3339),
		"resource_type": "encrypt-resource", "event_type": eventType, "summary": "通知",
		"resource": map[string]string{"original_type": original, "algorithm": "AEAD_AES_256_GCM",
			"ciphertext": base64.StdEncoding.EncodeToString(ct), "associated_data": original, "nonce": nonce}})
	return s.Sign(body, ts)
}

// Sign signs body as a notification stamped at ts with the platform key.
func (s *PayServer) Sign(body []byte, ts time.Time) Notification {
	tss := strconv.FormatInt(ts.Unix(), 10)
	nonce := randHex(16)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Wechatpay-Timestamp", tss)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Serial", s.PlatformSerial)
	h.Set("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
	h.Set("Wechatpay-Signature", sign(s.PlatformKey, tss+"\n"+nonce+"\n"+string(body)+"\n"))
	return Notification{Body: body, Header: h}
}

// Send posts the notification to url and returns the status code.
func (n Notification) Send(client *http.Client, url string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(n.Body))
	if err != nil {
		return 0, err
	}
	req.Header = n.Header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func sign(k *rsa.PrivateKey, msg string) string {
	h := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
