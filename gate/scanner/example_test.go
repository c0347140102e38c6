package scanner_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/gated-dev/gated/gate/scanner"
)

// Open a source from a URI and read its scans. A device source such as
// serial:/dev/ttyACM0?model=zebra-ds9308 is used the same way, and also
// implements Feedback.
func ExampleOpen() {
	src, err := scanner.Open("stdin:", scanner.Env{Stdin: strings.NewReader("G1:FIRST\nG1:SECOND\n")})
	if err != nil {
		fmt.Println(err)
		return
	}
	out := make(chan scanner.Scan)
	go func() {
		src.Run(context.Background(), out)
		close(out)
	}()
	for s := range out {
		fmt.Printf("%s from %s\n", s.Data, s.Source)
	}
	// Output:
	// G1:FIRST from stdin
	// G1:SECOND from stdin
}

// Models name a scanner's wire protocol and settings; a file with an error
// is refused with its file, field and reason.
func ExampleLoadModels() {
	models, err := scanner.LoadModels("")
	if err != nil {
		fmt.Println(err)
		return
	}
	md := models["zebra-ds9308"]
	fmt.Println(md.Vendor, md.Product, md.Framing.Protocol, md.Serial.Baud)
	// Output: Zebra DS9308 ssi 9600
}
