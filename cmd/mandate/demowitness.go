package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/witness"
)

// demoWitness is the demo's log client between org-a's log and org-b's
// witness (audit.witness.logs): it asks org-b to cosign org-a's latest
// checkpoint, from the size org-b cosigned last, as an authority with
// audit.witnesses does by itself.
type demoWitness struct {
	log, witness *demoOrg
	size         uint64 // the size the witness cosigned last
	hc           *http.Client
}

// cosign submits the log's latest checkpoint: its size, and the
// checkpoint with the witness's cosignature, verified with its key.
func (d *demoWitness) cosign(ctx context.Context) (uint64, []byte, error) {
	cp, err := d.log.admin.AuditCheckpoint(ctx)
	if err != nil {
		return 0, nil, err
	}
	lv, err := note.NewVerifier(d.log.a.AuditVerifierKey())
	if err != nil {
		return 0, nil, err
	}
	checkpoint, err := openCheckpoint(cp, lv)
	if err != nil {
		return 0, nil, err
	}
	size := checkpoint.Size
	var proof [][]byte
	if d.size > 0 && d.size < size {
		cons, err := d.log.admin.AuditConsistency(ctx, d.size, size)
		if err != nil {
			return 0, nil, err
		}
		proof = cons.Proof
	}
	status, ans, err := d.post(ctx, witness.Request(d.size, proof, cp))
	if err != nil {
		return 0, nil, err
	}
	if status != http.StatusOK {
		return 0, nil, fmt.Errorf("the witness answered %d: %s", status, ans)
	}
	cosigned := append(bytes.Clone(cp), ans...)
	wv, err := fnote.NewVerifierForCosignatureV1(d.witness.a.Witness().VerifierKey())
	if err != nil {
		return 0, nil, err
	}
	if n, err := note.Open(cosigned, note.VerifierList(lv, wv)); err != nil || len(n.Sigs) != 2 {
		return 0, nil, fmt.Errorf("the cosigned checkpoint does not verify with both keys (%v)", err)
	}
	d.size = size
	return size, cosigned, nil
}

// forkAt signs, with the log's own key (read from its data directory, as
// an operator could), a checkpoint of the size cosigned last with another
// root, and submits it: the witness must refuse it.
func (d *demoWitness) forkAt(ctx context.Context, dataDir string) (int, string, error) {
	keyPath, _ := authority.AuditPaths(dataDir)
	origin := audit.DefaultOrigin(d.log.td)
	signer, _, err := audit.LoadOrCreateSigner(keyPath, origin)
	if err != nil {
		return 0, "", err
	}
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, d.size, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xf0}, 32)))
	forged, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		return 0, "", err
	}
	status, ans, err := d.post(ctx, witness.Request(d.size, nil, forged))
	return status, string(ans), err
}

func (d *demoWitness) post(ctx context.Context, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.witness.url+"/v1/witness/add-checkpoint", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, ans, err
}
