// Package hsm keeps the CA's private keys in a PKCS#11 token (a hardware
// security module, or any PKCS#11 module: SoftHSM, a TPM's PKCS#11
// module, a cloud HSM's client library), as a ca.KeyManager.
//
// It guarantees:
//   - a key is made in the token (C_GenerateKeyPair) as a token object,
//     sensitive and not extractable: its private part never leaves the
//     token, and every signature is the token's (C_Sign);
//   - a key is found again by its KeyManager id, the object's CKA_ID and
//     CKA_LABEL, after a restart; making a key under an id the token
//     already holds is refused, and so is deleting or getting one it does
//     not hold (ca.ErrKeyNotFound);
//   - the token's user PIN is read from a file only this user may read,
//     and appears in no error and no log;
//   - the module, which runs in this process, is loaded only if no user
//     but root and this one could have replaced it: neither it, nor a
//     directory on its path, nor the file a link leads to, may be
//     written by group or others (ErrModuleNotTrusted);
//   - a token that forgets this process (restarted, its connection made
//     again: its sessions and the login gone) is logged in to anew by
//     the next signature, key made, key looked up or key deleted, which
//     is then made once more (a token that forgot the login hides its
//     private keys: a key not found is looked for again, logged in anew);
//     a key found again after that must be the key it was; a token that
//     cannot be logged in to anew is tried again after a pause, 1 s
//     doubling up to 30 s (what needs it meanwhile fails at once), and
//     one that refuses the PIN is not tried again: a wrong PIN counts
//     towards the token locking it;
//   - it is built with cgo only (the module is a C library loaded at run
//     time); without cgo, Open says so.
package hsm
