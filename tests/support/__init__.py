"""What more than one test file uses: generators of images, videos, posts, accounts and learners, fakes,
receivers, and the project and service helpers."""
