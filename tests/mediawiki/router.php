<?php
// Router for `php -S 127.0.0.1:PORT router.php` in front of one test wiki.
// The wiki's LocalSettings.php comes from the environment (MW_CONFIG_FILE, read by MediaWiki's
// own bootstrap); its files live under WIKIHASH_MW_IMAGES, served at /images.
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if (strncmp($path, '/images/', 8) === 0) {
	$file = getenv('WIKIHASH_MW_IMAGES') . substr(rawurldecode($path), 7);
	if (strpos($path, '..') === false && is_file($file)) {
		header('Content-Type: ' . (mime_content_type($file) ?: 'application/octet-stream'));
		header('Content-Length: ' . filesize($file));
		readfile($file);
		return true;
	}
	if (strncmp($path, '/images/thumb/', 14) === 0) {
		// MediaWiki's 404 thumbnail handler renders the missing thumbnail and stores it.
		chdir('/usr/share/mediawiki');
		require '/usr/share/mediawiki/thumb_handler.php';
		return true;
	}
	http_response_code(404);
	return true;
}
return false;  // api.php, index.php, load.php, resources: from the document root
