output "droplet_ip" {
  description = "Public address of the droplet."
  value       = digitalocean_droplet.app.ipv4_address
}

output "ssh" {
  description = "Log in; DEPTHBOOK_HOST for manage.sh deploy is the part after ssh."
  value       = "ssh root@${digitalocean_droplet.app.ipv4_address}"
}

output "api_url" {
  description = "GraphiQL and the API over HTTPS (bearer token: api_token). Without a domain the certificate is from Caddy's internal CA: see ca_root."
  value       = "https://${local.public_host}/"
}

output "grafana_url" {
  description = "Grafana over HTTPS (user admin, password: grafana_admin_password)."
  value       = "https://${local.public_host}/grafana/"
}

output "ca_root" {
  description = "Without a domain: how to fetch the root certificate clients trust for api_url."
  value       = var.domain == "" ? "ssh root@${digitalocean_droplet.app.ipv4_address} 'cd /opt/depthbook && ./manage.sh ca' > depthbook-ca.crt" : "not needed: Let's Encrypt"
}

output "api_token" {
  description = "Bearer token of the API."
  value       = random_password.api_token.result
  sensitive   = true
}

output "grafana_admin_password" {
  description = "Grafana admin password."
  value       = random_password.grafana_admin.result
  sensitive   = true
}

output "database_uri" {
  description = "Admin URI of the database (reachable from the droplet only: the managed cluster's private address, or the timescaledb container)."
  value       = local.self_hosted ? "postgres://depthbook:${random_password.db.result}@timescaledb:5432/depthbook" : digitalocean_database_cluster.pg[0].private_uri
  sensitive   = true
}

output "daily_bucket" {
  description = "Where the daily research set is copied (empty: the droplet's daily volume only)."
  value       = var.daily_bucket == "" ? "" : "s3://${var.daily_bucket}/depthbook"
}

output "collector_ips" {
  description = "Public addresses of the extra collectors (collector_regions), in order."
  value       = digitalocean_droplet.collector[*].ipv4_address
}
