"""Rails and Laravel applications."""

from __future__ import annotations

import json

from tests.agent.corpus.sample import SampleRepo

RUBY_PHP: tuple[SampleRepo, ...] = (
    SampleRepo(
        "rails",
        "rails",
        {
            "Gemfile": "source 'https://rubygems.org'\ngem 'rails', '~> 7.1'\ngem 'rubocop'\n",
            "Gemfile.lock": "",
            "config/application.rb": "",
            ".ruby-version": "3.3.0\n",
        },
        package_manager="bundler",
    ),
    SampleRepo(
        "laravel",
        "laravel",
        {
            "composer.json": json.dumps(
                {
                    "name": "acme/shop",
                    "require": {"laravel/framework": "^11.0"},
                    "require-dev": {"laravel/pint": "^1.0"},
                }
            ),
            "artisan": "",
            "composer.lock": "{}",
        },
        package_manager="composer",
    ),
)
