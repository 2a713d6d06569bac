# OpenBao policy "mtls-issue": what mtls.rollout.certificates, revoke.yml, verify.yml and report.yml
# need on CAs under the mount prefix "mtls/": sign CSRs, revoke, read CRLs and the issuance record.
# It cannot create or change CAs or roles.
path "sys/mounts/mtls/+" {
  capabilities = ["read"]                       # whether a CA's mount exists (read-only)
}
path "mtls/+/sign/+" {
  capabilities = ["update"]                     # issue from a CSR through role server|client|both
}
path "mtls/+/revoke" {
  capabilities = ["update"]
}
path "mtls/+/certs" {
  capabilities = ["list"]                       # what a CA issued (the report)
}
path "mtls/+/cert/+" {
  capabilities = ["read"]                       # one certificate and its revocation state
}
path "mtls/+/config/issuers" {
  capabilities = ["read"]                       # the CA certificate and chain that leaves are served with
}
path "mtls/+/issuer/+" {
  capabilities = ["read"]
}
path "mtls/+/crl/pem" {
  capabilities = ["read"]                       # also readable without a token
}
path "mtls/+/config/crl" {
  capabilities = ["read", "update"]             # the CRL's validity (mtls_crl_valid_days)
}
path "mtls/+/crl/rotate" {
  capabilities = ["read"]                       # sign the CRL again before it runs out
}
