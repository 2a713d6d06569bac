# OpenBao policy "mtls-ca": what mtls.rollout.ca needs to create and keep the CA hierarchy, one PKI
# mount per CA under the mount prefix "mtls/" (mount mtls/<ca name>). Grant it to the identity that
# runs site.yml's CA step; the hosts' certificates need only mtls-issue.hcl.
path "sys/mounts/mtls/+" {
  capabilities = ["create", "read", "update"]   # enable a CA's pki mount; read whether it exists
}
path "sys/mounts/mtls/+/tune" {
  capabilities = ["update"]                     # max_lease_ttl, so a mount does not cap a CA's validity
}
path "mtls/+/root/generate/+" {
  capabilities = ["update"]                     # a root, key generated inside OpenBao (internal|existing)
}
path "mtls/+/intermediate/generate/+" {
  capabilities = ["update"]                     # an intermediate's CSR, key inside OpenBao
}
path "mtls/+/root/sign-intermediate" {
  capabilities = ["update"]                     # the parent signs the child CA
}
path "mtls/+/intermediate/set-signed" {
  capabilities = ["update"]
}
path "mtls/+/config/issuers" {
  capabilities = ["read", "update"]             # which issuer is the default; switch after a renewal
}
path "mtls/+/issuer/+" {
  capabilities = ["read", "patch"]              # the CA certificate and chain; leaf_not_after_behavior
}
path "mtls/+/roles/+" {
  capabilities = ["create", "read", "update"]   # roles server, client, both
}
