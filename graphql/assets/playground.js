// depthbook's GraphiQL: every asset from this server (no CDN), and the API token entered once
// in the bar above the editor. The token is kept in this browser's localStorage and sent as
// `Authorization: Bearer …` on queries and in graphql-ws's connection_init on subscriptions
// (a browser cannot set headers on a WebSocket upgrade). `?query=` opens with that query.
(function () {
  'use strict';
  var KEY = 'depthbook.apiToken';
  var DEFAULT_QUERY = [
    '# depthbook: Binance order books, trades and best bid/ask.',
    '# Docs: the book icon on the left. Run: Ctrl-Enter.',
    '{',
    '  instruments(active: true) { venue symbol tier }',
    '}',
    ''
  ].join('\n');
  var needed = document.body.dataset.auth === 'required';
  var bar = document.getElementById('token-bar');
  var input = document.getElementById('token');
  var state = document.getElementById('token-state');
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  var asked = new URLSearchParams(location.search).get('query');

  function token() {
    try { return localStorage.getItem(KEY) || ''; } catch (e) { return ''; }
  }

  var current = token();

  function remember(t) {
    try {
      if (t) { localStorage.setItem(KEY, t); } else { localStorage.removeItem(KEY); }
    } catch (e) { /* storage disabled: the token lasts until the page is left */ }
    current = t;
  }

  function endpoint(path, ws) {
    var u = new URL(path, location.href);
    if (ws) { u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:'; }
    return u.toString();
  }

  function render() {
    var auth = current ? { Authorization: 'Bearer ' + current } : {};
    state.textContent = current ? 'token set' : 'enter the token to run queries';
    var fetcher = GraphiQL.createFetcher({
      url: endpoint('/graphql', false),
      subscriptionUrl: endpoint('/graphql/ws', true),
      headers: auth,
      wsConnectionParams: auth
    });
    var props = { fetcher: fetcher, defaultQuery: DEFAULT_QUERY, key: current };
    if (asked) { props.query = asked; }
    root.render(React.createElement(GraphiQL, props));
  }

  bar.hidden = !needed;
  bar.addEventListener('submit', function (ev) {
    ev.preventDefault();
    remember(input.value.trim());
    input.value = '';
    render();
  });
  document.getElementById('token-forget').addEventListener('click', function () {
    remember('');
    render();
  });
  render();
})();
