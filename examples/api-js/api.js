// api-js: a small JSON API written the way componentize-js users write a
// wasi:http function: a `fetch` event listener, with the standard Request,
// Response, URL and fetch objects.
//
//   GET  <prefix>/hello?name=X   (x-user: U)  greets X as U
//   POST <prefix>/sum            {"numbers": [1, 2.5]} -> their sum and count
//   GET  <prefix>/status/<code>  answers with that status
//   GET  <prefix>/backend        calls BACKEND_URL and reports its answer
//
// <prefix> is whatever route the manifest mounts it at (/api-js/...): only
// the path after the first segment is looked at.
//
// Built by `scripts/build-polyglot api-js` with componentize-js, against the
// world in wit/world.wit.
import { getEnvironment } from 'wasi:cli/environment@0.2.10';

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  const response = await route(request, url);
  console.log(`api-js: ${request.method} ${url.pathname}${url.search} -> ${response.status}`);
  return response;
}

async function route(request, url) {
  // The path after the route prefix: "/api-js/status/418" -> "status/418".
  const path = url.pathname.split('/').slice(2).join('/');
  switch (`${request.method} ${path}`) {
    case 'GET hello':
      return hello(
        url.searchParams.get('name') ?? 'world',
        request.headers.get('x-user') ?? 'anonymous',
      );
    case 'POST sum':
      return sum(await request.text());
    case 'GET backend':
      return backend();
  }
  const code = path.match(/^status\/([^/]*)$/)?.[1];
  if (request.method === 'GET' && code !== undefined) {
    return status(code);
  }
  return Response.json({ error: 'no such path' }, { status: 404 });
}

function hello(name, user) {
  return Response.json({ message: `Hello, ${name}!`, user, language: 'js' });
}

function sum(text) {
  let numbers;
  try {
    numbers = JSON.parse(text)?.numbers;
  } catch (error) {
    return Response.json({ error: `invalid JSON: ${error.message}` }, { status: 400 });
  }
  if (!Array.isArray(numbers) || !numbers.every((n) => typeof n === 'number')) {
    return Response.json({ error: 'expected {"numbers": [<number>, ...]}' }, { status: 400 });
  }
  return Response.json({ sum: numbers.reduce((a, b) => a + b, 0), count: numbers.length });
}

function status(text) {
  const code = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!(code >= 200 && code <= 599)) {
    return Response.json({ error: `not a status from 200 to 599: ${text}` }, { status: 400 });
  }
  // HTTP forbids a body with these: the Response constructor would throw.
  if (code === 204 || code === 205 || code === 304) {
    return new Response(null, { status: code });
  }
  return Response.json({ status: code }, { status: code });
}

async function backend() {
  const target = env('BACKEND_URL');
  if (target === undefined) {
    return Response.json({ error: 'BACKEND_URL is not set' }, { status: 500 });
  }
  try {
    const answer = await fetch(target);
    return Response.json({ backend_status: answer.status, backend_body: await answer.text() });
  } catch (error) {
    return Response.json({ error: `GET ${target}: ${error.message}` }, { status: 502 });
  }
}

// The environment can only be read while handling a request (not while the
// component is being built), so it is read on first use.
let environment;
function env(name) {
  environment ??= new Map(getEnvironment());
  return environment.get(name);
}
