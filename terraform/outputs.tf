output "droplet_ip" {
  description = "Public address of the droplet."
  value       = digitalocean_droplet.app.ipv4_address
}

output "ssh" {
  description = "Log in; DEPTHBOOK_HOST for manage.sh deploy is the part after ssh."
  value       = "ssh root@${digitalocean_droplet.app.ipv4_address}"
}

output "api_url" {
  description = "GraphiQL and the API (bearer token: api_token)."
  value       = "http://${digitalocean_droplet.app.ipv4_address}:8080/"
}

output "grafana_url" {
  description = "Grafana (user admin, password: grafana_admin_password)."
  value       = "http://${digitalocean_droplet.app.ipv4_address}:3000/"
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
  description = "Admin URI of the managed PostgreSQL (reachable from the droplet only)."
  value       = digitalocean_database_cluster.pg.private_uri
  sensitive   = true
}

output "daily_bucket" {
  description = "Where the daily research set is copied (empty: the droplet's daily volume only)."
  value       = var.daily_bucket == "" ? "" : "s3://${var.daily_bucket}/depthbook"
}
