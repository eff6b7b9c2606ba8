"""The /admin web console: one static page (index.html, console.css, console.js) over the JSON API."""
