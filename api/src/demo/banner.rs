//! What `bourse demo` prints once the market is alive.

use super::client::Credentials;

/// The welcome text: where to look and how to log in.
pub fn banner(url: &str, visitor: &Credentials, pairs: &[String], data_dir: &str) -> String {
    let ws = url.replacen("http", "ws", 1);
    format!(
        "\n\
         Bourse demo is running: simulated market makers and takers on {pairs}\n\
         \n\
         \x20 Trading page   {url}/\n\
         \x20 API docs       {url}/docs\n\
         \x20 OpenAPI        {url}/v1/openapi.json\n\
         \x20 WebSocket      {ws}/v1/ws\n\
         \x20 Data dir       {data_dir}\n\
         \n\
         Demo account (funded; log in on the page, or get a token):\n\
         \x20 client id      {id}\n\
         \x20 client secret  {secret}\n\
         \n\
         \x20 curl -s -X POST {url}/v1/oauth2/token -d grant_type=client_credentials \\\n\
         \x20      -d client_id={id} -d client_secret={secret}\n\
         \n\
         Load it (deposits are auto-approved here, so no admin credentials are needed):\n\
         \x20 bourse bench http --url {url} --clients 8 --duration 10s\n\
         \n\
         Press Ctrl-C to stop.\n",
        pairs = pairs.join(", "),
        id = visitor.client_id,
        secret = visitor.client_secret,
    )
}
