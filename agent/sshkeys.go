package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// sshKeyTypes are the host key types OpenSSH's sshd loads by default
// (/etc/ssh/ssh_host_TYPE_key), in the order Debian's postinst makes them.
var sshKeyTypes = []string{"rsa", "ecdsa", "ed25519"}

// hostKeyPlan says which host key types a node gets: every type the image
// carries a key of (those keys are the master's, shared by every node, so
// each is replaced), and at least ed25519 and ecdsa. RSA is made only when
// the image had an RSA key: a 3072-bit key takes seconds on a slow machine,
// and a diskless node makes its keys at every boot.
func hostKeyPlan(etcSSH string) []string {
	var out []string
	for _, t := range sshKeyTypes {
		_, err := os.Lstat(filepath.Join(etcSSH, "ssh_host_"+t+"_key"))
		if err == nil || t != "rsa" {
			out = append(out, t)
		}
	}
	return out
}

// hostKeys gives the node its own SSH host keys in etcSSH (the overlay's
// /etc/ssh, never the root). With keep (a directory on the state partition
// under the node's name) the keys are made once and copied from there at
// every later boot; with keep "" they are new at every boot. node is
// the public keys' comment (root@NODE). It returns the types made new,
// the types taken from keep, and notes for the console.
func hostKeys(etcSSH, keep, node string) (made, kept, notes []string, err error) {
	if keep != "" {
		if err := os.MkdirAll(keep, 0o700); err != nil {
			return nil, nil, nil, err
		}
	}
	for _, t := range hostKeyPlan(etcSSH) {
		name := "ssh_host_" + t + "_key"
		priv, pub, fromKeep := []byte(nil), []byte(nil), false
		if keep != "" {
			priv, pub, err = readKeyPair(filepath.Join(keep, name))
			switch {
			case err == nil:
				fromKeep = true
			case errors.Is(err, fs.ErrNotExist):
			default:
				// A torn or damaged kept key: a new key (clients see the
				// host key change) beats the master's shared one or an
				// sshd that refuses to start.
				notes = append(notes, fmt.Sprintf("kept %s key unusable (%v): made a new one", t, err))
			}
		}
		if !fromKeep {
			if priv, pub, err = newHostKey(t, node); err != nil {
				return made, kept, notes, fmt.Errorf("%s host key: %w", t, err)
			}
			if keep != "" {
				if err := writeKeyPair(filepath.Join(keep, name), priv, pub); err != nil {
					return made, kept, notes, fmt.Errorf("keep %s key: %w", t, err)
				}
			}
		}
		if err := writeKeyPair(filepath.Join(etcSSH, name), priv, pub); err != nil {
			return made, kept, notes, err
		}
		if fromKeep {
			kept = append(kept, t)
		} else {
			made = append(made, t)
		}
	}
	return made, kept, notes, nil
}

// newHostKey makes a key pair in OpenSSH's formats, as ssh-keygen -A does.
func newHostKey(typ, comment string) (priv, pub []byte, err error) {
	var k crypto.Signer
	switch typ {
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, nil, fmt.Errorf("unknown host key type %q", typ)
	}
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(k, "")
	if err != nil {
		return nil, nil, err
	}
	sp, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		return nil, nil, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " root@" + comment + "\n"
	return pem.EncodeToMemory(block), []byte(line), nil
}

// readKeyPair reads a kept key and checks the two halves belong together:
// a torn write must give a new key, not an sshd that refuses to start.
func readKeyPair(path string) (priv, pub []byte, err error) {
	if priv, err = os.ReadFile(path); err != nil {
		return nil, nil, err
	}
	if pub, err = os.ReadFile(path + ".pub"); err != nil {
		return nil, nil, err
	}
	k, err := ssh.ParsePrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	p, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%s.pub: %w", path, err)
	}
	if string(p.Marshal()) != string(k.PublicKey().Marshal()) {
		return nil, nil, fmt.Errorf("%s.pub is not the public half of %s", path, path)
	}
	return priv, pub, nil
}

// writeKeyPair replaces path and path.pub (the image's files in the
// overlay, or the kept copy) with the modes ssh-keygen gives.
func writeKeyPair(path string, priv, pub []byte) error {
	for _, f := range []struct {
		p    string
		b    []byte
		mode os.FileMode
	}{{path, priv, 0o600}, {path + ".pub", pub, 0o644}} {
		tmp := f.p + ".imprint-new"
		if err := os.WriteFile(tmp, f.b, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(tmp, f.mode); err != nil {
			return err
		}
		if err := os.Rename(tmp, f.p); err != nil {
			return err
		}
	}
	return nil
}

// sshKeyDir is where a node's kept host keys live on the state partition.
func sshKeyDir(state, node string) string {
	return filepath.Join(state, "nodes", node, ".imprint", "ssh")
}

func joinTypes(ts []string) string {
	if len(ts) == 0 {
		return "none"
	}
	return strings.Join(ts, " ")
}
