"""The console: a page at ``/`` that shows the migration at a glance.

``static/`` holds the page's shell (HTML, CSS and a small script, no build step);
``panel.py`` renders the panel the shell fetches with the user's key; ``charts.py``
draws its charts as SVG. Imported by ``gateway/web/routes/console.py`` only.
"""
