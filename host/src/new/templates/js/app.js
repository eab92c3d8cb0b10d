// The function {{name}}: answers every request with a greeting that names
// its path. componentize-js runs it in StarlingMonkey, which turns each
// wasi:http request into a `fetch` event.
addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  const text = `Hello from {{name}} (JavaScript) at ${url.pathname}${url.search}\n`;
  event.respondWith(
    new Response(text, { headers: { 'content-type': 'text/plain; charset=utf-8' } }),
  );
});
